"""Where the backbone comes from: named explicitly, fingerprinted by content, its waveform
normalisation decided and logged."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from helpers import MICRO, MICRO_ARCH, ROOT, assert_clean_error, run_sh, run_step, set_args, venv_env

from voxadapt.config import BackboneConfig, load_config
from voxadapt.errors import VoxadaptError
from voxadapt.models.backbone import backbone_from_config, build_hf_model
from voxadapt.models.loading import load_speaker_model
from voxadapt.models.speaker import build_model, save_model_dir

TINY_WAVLM = ROOT / "models" / "tiny_wavlm"
# The shipped pre-trained tiny model, frozen, one short epoch: what resuming is checked against.
SHIPPED = [o for o in MICRO if not o.startswith(("model.backbone.arch", "train.phases"))] + [
    "augment.speed_perturb=false",
    "train.phases=[{name: main, epochs: 1, trainable_layers: 0, lr: 0.01, margin: 0.0, checkpoint_every_steps: 4, "
    "average_last: 1}]"]


def train(tiny_data, exp, overrides):
    return run_step("train", *set_args(overrides), "--data", str(tiny_data), "--exp", str(exp), cwd=ROOT, timeout=300)


def micro_model_dir(path, preprocessor: dict | None = None):
    """A save_pretrained directory of the micro architecture (with a preprocessor config if given)."""
    build_hf_model("wavlm", "", json.loads(MICRO_ARCH), 0).save_pretrained(path)
    if preprocessor is not None:
        (path / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return path


# ----------------------------------------------------------------------- weights named explicitly


def test_a_backbone_without_path_or_arch_is_not_built_at_random():
    with pytest.raises(VoxadaptError, match="--ssl_model"):
        backbone_from_config(BackboneConfig(), 0)
    cfg = load_config(ROOT / "conf" / "mhfa_wavlm_base_plus.yaml")
    assert cfg.model.backbone.source == ""
    assert load_config(ROOT / "conf" / "mhfa_tiny.yaml").model.backbone.source == "pretrained"
    assert load_config(None, MICRO).model.backbone.source == "random"
    assert load_config(ROOT / "conf" / "mhfa_frozen_random_tiny.yaml").model.backbone.source == "random"


def test_training_without_weights_names_ssl_model_and_writes_nothing(tiny_data, tmp_path):
    no_weights = [o for o in MICRO if not o.startswith("model.backbone.arch")]
    err = assert_clean_error(train(tiny_data, tmp_path / "exp", no_weights), "model.backbone.path is empty", "--ssl_model DIR")
    assert "model.backbone.arch" in err
    assert not (tmp_path / "exp").exists()


def test_run_sh_asks_for_ssl_model_before_stage_0(tmp_path):
    proc = run_sh("run.sh", "--config", "conf/mhfa_wavlm_base_plus.yaml", "--data", str(tmp_path / "data"),
                  "--exp", str(tmp_path / "exp"), env=venv_env(), timeout=120)
    assert proc.returncode != 0
    assert "--ssl_model is not given" in proc.stderr and "model.backbone.path" in proc.stderr, proc.stderr
    absent = run_sh("run.sh", "--config", "conf/mhfa_wavlm_base_plus.yaml", "--ssl_model", str(tmp_path / "absent"),
                    "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"), env=venv_env(), timeout=120)
    assert absent.returncode != 0 and f"--ssl_model {tmp_path / 'absent'}: not found" in absent.stderr, absent.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "exp").exists()


# ------------------------------------------------------------------ fingerprints hold contents


def test_the_backbone_is_fingerprinted_by_content_not_path(tmp_path, monkeypatch):
    from voxadapt.models.speaker import model_fingerprint

    monkeypatch.chdir(ROOT)
    copy = shutil.copytree(TINY_WAVLM, tmp_path / "copy")
    prints = [model_fingerprint(load_config(None, [f"model.backbone.path={p}"]).model)
              for p in ("models/tiny_wavlm", "./models/tiny_wavlm", str(TINY_WAVLM), str(copy))]
    assert all(p == prints[0] for p in prints)
    (copy / "model.safetensors").write_bytes(b"other weights")
    assert model_fingerprint(load_config(None, [f"model.backbone.path={copy}"]).model) != prints[0]
    with pytest.raises(VoxadaptError, match="model.backbone.path not found"):
        model_fingerprint(load_config(None, [f"model.backbone.path={tmp_path / 'absent'}"]).model)


def test_resume_follows_the_model_and_what_stage_3_reads(tiny_data, tmp_path):
    """A finished stage 3 is recognised with the same model under other paths and with another
    --musan_root (stage 3 reads stage 2's manifests); a missing model is 'not found'."""
    exp = tmp_path / "exp"
    first = train(tiny_data, exp, SHIPPED + ["model.backbone.path=models/tiny_wavlm"])
    assert first.returncode == 0, first.stderr[-3000:]
    copy = shutil.copytree(TINY_WAVLM, tmp_path / "copy")
    for other in (["model.backbone.path=./models/tiny_wavlm"], [f"model.backbone.path={copy}"],
                  ["model.backbone.path=models/tiny_wavlm", f"augment.musan_root={tmp_path / 'musan'}"]):
        again = train(tiny_data, exp, SHIPPED + other)
        assert again.returncode == 0 and "changed" not in again.stderr, (other, again.stderr[-3000:])
        assert "resuming from" not in again.stderr  # the phase is done: nothing retrained
    assert_clean_error(train(tiny_data, exp, SHIPPED + [f"model.backbone.path={tmp_path / 'absent'}"]),
                       "absent: model.backbone.path not found", "--ssl_model")


# ------------------------------------------------------------------------ waveform normalisation


def test_waveform_normalisation_is_explicit_and_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="voxadapt.models.speaker")
    bare = micro_model_dir(tmp_path / "bare")
    base = [o for o in MICRO if not o.startswith("model.backbone.arch")]
    with pytest.raises(VoxadaptError, match="preprocessor_config.json: missing.*model.backbone.normalize_waveform"):
        build_model(load_config(None, base + [f"model.backbone.path={bare}"]), 3)
    model, _ = build_model(load_config(None, base + [f"model.backbone.path={bare}", "model.backbone.normalize_waveform=true"]), 3)
    assert model.backbone.normalize_waveform and "waveform normalisation: on (from model.backbone.normalize_waveform)" in caplog.text
    on = micro_model_dir(tmp_path / "on", {"do_normalize": True})
    model, _ = build_model(load_config(None, base + [f"model.backbone.path={on}"]), 3)
    assert model.backbone.normalize_waveform and f"waveform normalisation: on (from {on / 'preprocessor_config.json'})" in caplog.text
    model, _ = build_model(load_config(None, MICRO), 3)
    assert not model.backbone.normalize_waveform and "waveform normalisation: off (from default for a config-only" in caplog.text


def test_a_saved_model_keeps_its_normalisation_without_the_backbone_dir(tmp_path):
    on = micro_model_dir(tmp_path / "on", {"do_normalize": True})
    base = [o for o in MICRO if not o.startswith("model.backbone.arch")]
    cfg = load_config(None, base + [f"model.backbone.path={on}"])
    model, head = build_model(cfg, 3)
    save_model_dir(tmp_path / "model", cfg, model, head, ["a", "b", "c"])
    shutil.rmtree(on)  # e.g. the model dir copied to another machine
    loaded = load_speaker_model(tmp_path / "model").model
    assert loaded.backbone.normalize_waveform
    wav = torch.randn(1, 16000) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(loaded(wav), model.eval()(wav))
