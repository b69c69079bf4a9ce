"""The shipped pre-trained model and the pre-training step that made it."""

from __future__ import annotations

import time

import pytest
import torch
from helpers import ROOT, assert_clean_error, kill_group, run_py, set_args, start_killable

from voxadapt.config import load_config
from voxadapt.models.speaker import build_model

SHIPPED = ROOT / "models" / "tiny_wavlm"

# A micro architecture and a few steps on the tiny corpus's training dir.
QUICK = [
    'model.backbone.arch={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, '
    '"intermediate_size": 64, "conv_dim": [16, 16, 32, 32, 32, 32, 32], "num_conv_pos_embeddings": 8, '
    '"num_conv_pos_embedding_groups": 4}',
    "pretrain.clusters=8", "pretrain.kmeans_frames=2000", "pretrain.crop_seconds=1.0", "pretrain.batch_size=8",
    "pretrain.steps=100", "pretrain.lr=0.005", "pretrain.warmup_steps=5", "pretrain.checkpoint_every_steps=5",
    "pretrain.num_workers=0", "train.num_threads=1",
]


def pretrain_cmd(data_dir, work, out, extra=()):
    over = QUICK + [f"pretrain.data_dir={data_dir}", f"pretrain.out_dir={out}", *extra]
    return ["python", str(ROOT / "pyscripts" / "pretrain_ssl.py"), *set_args(over), "--work", str(work)]


def test_shipped_model_loads_with_from_pretrained_and_gives_all_hidden_states():
    from transformers import WavLMModel

    hf = WavLMModel.from_pretrained(str(SHIPPED))
    assert hf.config.num_hidden_layers == 4
    assert (SHIPPED / "model.safetensors").stat().st_size < 20e6
    cfg = load_config(ROOT / "conf" / "mhfa_tiny.yaml")
    model, _ = build_model(cfg, 2)  # conf/mhfa_tiny.yaml's backbone is the shipped model
    states, _ = model.backbone(torch.randn(2, 16000) * 0.1)
    assert len(states) == hf.config.num_hidden_layers + 1
    assert all(s.shape == (2, states[0].shape[1], hf.config.hidden_size) for s in states)


def test_pretraining_loss_goes_down_and_the_model_loads(tiny_data, tmp_path):
    from transformers import WavLMModel

    proc = run_py("pretrain_ssl.py", *pretrain_cmd(tiny_data / "train", tmp_path / "work", tmp_path / "model")[2:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    history = json.loads((tmp_path / "model" / "pretraining.json").read_text())["history"]
    losses = [loss for _, loss, _ in history]
    assert len(losses) >= 6
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.05, losses
    model = WavLMModel.from_pretrained(str(tmp_path / "model"))
    assert model.config.num_hidden_layers == 2


def test_pretraining_resumes_after_a_kill(tiny_data, tmp_path):
    work = tmp_path / "work"
    proc = start_killable(pretrain_cmd(tiny_data / "train", work, tmp_path / "model"), ROOT, {"PYTHONPATH": str(ROOT)})
    deadline = time.time() + 300
    while time.time() < deadline and not list((work / "checkpoints").glob("ckpt-*.pt")):
        time.sleep(0.05)
    kill_group(proc)
    assert list((work / "checkpoints").glob("ckpt-*.pt")), "no checkpoint before the kill"
    assert not (tmp_path / "model").exists()
    again = run_py("pretrain_ssl.py", *pretrain_cmd(tiny_data / "train", work, tmp_path / "model")[2:])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr
    assert (tmp_path / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("case", ["no_audio", "bad_arch"])
def test_bad_inputs(case, tmp_path):
    if case == "no_audio":
        d = tmp_path / "empty"
        d.mkdir()
        for name in ("wav.scp", "utt2spk", "spk2utt"):
            (d / name).write_text("")
        proc = run_py("pretrain_ssl.py", *pretrain_cmd(d, tmp_path / "work", tmp_path / "model")[2:])
        assert_clean_error(proc, str(d))
    else:
        proc = run_py("pretrain_ssl.py", *pretrain_cmd(tmp_path, tmp_path / "work", tmp_path / "model",
                                                     ['model.backbone.arch={"hidden_size": 30, "num_attention_heads": 4}'])[2:])
        assert_clean_error(proc, "transformers cannot build a wavlm model")
    assert not (tmp_path / "model").exists()
