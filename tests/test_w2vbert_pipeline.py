"""A tiny random-init w2v-BERT through run.sh stages 3-8, as a WavLM goes: trained (killed and
resumed), embedded, scored, packaged with its ONNX graph, used by `voxadapt embed`; and run.sh's
one-line answer to a .pt checkpoint."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from helpers import ROOT, kill_group, run_sh, run_stages, start_killable, venv_env, write_config
from test_ddp import torchrun
from test_train import _losses
from test_w2vbert import W2VBERT, W2VBERT_ARCH

pytestmark = pytest.mark.slow

STAGES = W2VBERT + [
    "train.phases.0.epochs=1", "train.phases.0.average_last=1", "train.phases.0.checkpoint_every_steps=2",
    "scoring.lda_dim=16", "scoring.asnorm_top_n=5", "scoring.calibration_trials=200",
]


def test_run_sh_stages_3_to_8_with_a_tiny_w2vbert_killed_and_resumed(tiny_data, tmp_path):
    shutil.copytree(tiny_data, tmp_path / "data", symlinks=True)
    write_config(tmp_path / "cfg.yaml", STAGES)
    # Stage 3's own command, one process (run.sh's torchrun puts the trainer in a process group of its own).
    first = start_killable([sys.executable, "-m", "voxadapt.stages", "train", "--config", str(tmp_path / "cfg.yaml"),
                            "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp")], ROOT, {"PYTHONPATH": str(ROOT)})
    deadline = time.time() + 300
    while not list((tmp_path / "exp").glob("*/main/checkpoints/ckpt-*.pt")) and time.time() < deadline:
        assert first.poll() is None, first.stdout.read()
        time.sleep(0.2)
    kill_group(first)
    assert not list((tmp_path / "exp").glob("*/main/final")), "the phase ended before the kill"
    proc = run_stages(tmp_path, 3, 8)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = tmp_path / "exp" / "mhfa_tiny"
    assert "phase main: resuming from ckpt-" in (exp / "log" / "train.log").read_text()
    assert (exp / "embeddings" / "test" / "xvector.scp").is_file() and (exp / "package" / "model.onnx").is_file()
    wav = (tmp_path / "data" / "test" / "wav.scp").read_text().split()[1]
    out = subprocess.run([sys.executable, "-m", "voxadapt", "embed", str(exp / "package"), wav], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    import onnxruntime as ort

    import voxadapt as api

    model = api.load(exp / "package")
    session = ort.InferenceSession(str(exp / "package" / "model.onnx"), providers=["CPUExecutionProvider"])
    x, _ = sf.read(wav, dtype="float32")
    a, b = session.run(None, {"waveform": x[None]})[0][0], model.embed(x, sample_rate=16000)
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.9999


def test_run_sh_names_a_pt_checkpoint_before_stage_0(tmp_path):
    pt = tmp_path / "WavLM-Large.pt"
    pt.write_bytes(b"not read")
    proc = run_sh("run.sh", "--config", "conf/mhfa_w2vbert2.yaml", "--ssl_model", str(pt), "--data", str(tmp_path / "data"),
                  "--exp", str(tmp_path / "exp"), env=venv_env(), timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr
    assert "a fairseq/UniSpeech .pt checkpoint is not read" in errors[0] and "--local-dir" in errors[0]
    assert not (tmp_path / "data").exists() and not (tmp_path / "exp").exists()


def test_two_processes_train_a_w2vbert_as_one_with_layerdrop(tiny_data, tmp_path):
    """DDP with LayerDrop and L2-SP: every parameter a rank uses gets its gradient (no CNN, the
    model's own CTC adapter removed), so two processes run the one-process curve."""
    arch = W2VBERT_ARCH.replace("}", ', "conformer_conv_dropout": 0.0}')  # its only dropout on by default
    over = [o if not o.startswith("model.backbone.arch") else f"model.backbone.arch={arch}" for o in W2VBERT] + [
        "train.phases.0.epochs=1", "train.phases.0.average_last=1", "train.phases.0.l2sp=normalized",
        "train.phases.0.layerdrop=0.5", "loader.batches_per_epoch=4"]
    losses = {}
    for n in (1, 2):
        proc = torchrun(n, tiny_data, tmp_path / f"exp{n}", over)
        assert proc.returncode == 0, proc.stderr[-3000:]
        losses[n] = _losses(tmp_path / f"exp{n}")
    assert len(losses[1]) == len(losses[2]) == 4
    np.testing.assert_allclose(losses[2], losses[1], rtol=1e-5)
