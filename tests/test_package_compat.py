"""Packages and configs saved by earlier versions keep loading: tests/data/package_v1 was made by
the recipe before config schema 2 (which renamed augment.aug_prob), with its embedding of a fixed
waveform recorded at the time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from voxadapt.config import SCHEMA_VERSION, dump_yaml, load_config
from voxadapt.errors import ConfigError

OLD_PACKAGE = Path(__file__).parent / "data" / "package_v1"


def fixed_waveform() -> np.ndarray:
    t = np.arange(32000) / 16000
    return (0.1 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32)


def test_package_saved_before_the_key_rename_loads_and_embeds_as_it_did():
    import voxadapt

    assert "aug_prob" in (OLD_PACKAGE / "config.yaml").read_text()  # really the old schema
    v = voxadapt.load(OLD_PACKAGE)
    assert v.cfg.augment.probability == 0.6
    recorded = np.array(json.loads((OLD_PACKAGE.parent / "package_v1_embedding.json").read_text())["embedding"])
    emb = v.embed(fixed_waveform(), sample_rate=v.sample_rate)
    # Recorded on another machine and version: the same model, floats from other kernels.
    np.testing.assert_allclose(emb, recorded, rtol=1e-3, atol=1e-4)
    same = voxadapt.load(OLD_PACKAGE, method="cosine").verify(fixed_waveform(), fixed_waveform(), sample_rate=v.sample_rate)
    assert same.score == pytest.approx(1.0, abs=1e-5) and same.accept


def test_saved_configs_carry_the_schema_version_and_round_trip(tmp_path):
    cfg = load_config(None)
    text = dump_yaml(cfg)
    assert text.startswith(f"schema_version: {SCHEMA_VERSION}\n")
    (tmp_path / "c.yaml").write_text(text)
    assert load_config(tmp_path / "c.yaml") == cfg


def test_old_names_in_a_versioned_config_and_unknown_versions_are_errors(tmp_path):
    text = dump_yaml(load_config(None)).replace("  probability:", "  aug_prob:")
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match="'augment.aug_prob' was renamed 'augment.probability'"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "v1.yaml").write_text(text.replace(f"schema_version: {SCHEMA_VERSION}", "schema_version: 1"))
    assert load_config(tmp_path / "v1.yaml").augment.probability == 0.6
    (tmp_path / "v9.yaml").write_text(text.replace(f"schema_version: {SCHEMA_VERSION}", "schema_version: 99"))
    with pytest.raises(ConfigError, match="schema_version 99 is not one this voxadapt reads"):
        load_config(tmp_path / "v9.yaml")


def test_an_old_package_scores_through_local_evaluate_sh_paths(tmp_path):
    """Stage 5's jobs read the package's config with --config: the old keys are translated there too."""
    from helpers import run_step

    pkg = tmp_path / "pkg"
    shutil.copytree(OLD_PACKAGE, pkg)
    proc = run_step("config", "--config", str(pkg / "config.yaml"), "--get", "augment.probability")
    assert proc.returncode == 0 and proc.stdout.strip() == "0.6", proc.stderr


def test_outputs_made_before_the_rename_are_still_recognised(tmp_path):
    """Stage markers and checkpoints record config sections: an experiment trained before the
    rename must not be refused as 'made with different settings'."""
    import dataclasses

    import torch

    from voxadapt.fileio import StageMarker
    from voxadapt.train import checkpoint as ckpt_io

    now = {"augment": dataclasses.asdict(load_config(None).augment), "seed": 1}
    before = {**now, "augment": {("aug_prob" if k == "probability" else k): v for k, v in now["augment"].items()}}
    StageMarker(tmp_path / "done.json", before).mark_done()
    assert StageMarker(tmp_path / "done.json", now).is_done()
    changed = {**now, "augment": {**now["augment"], "probability": 0.3}}
    with pytest.raises(Exception, match="made with different settings"):
        StageMarker(tmp_path / "done.json", changed).is_done()
    ckpt_io.save_checkpoint(tmp_path / "ckpt", 3, {"fingerprint": before, "step": 3, "w": torch.zeros(2)})
    assert ckpt_io.latest_checkpoint(tmp_path / "ckpt", now)["step"] == 3
    with pytest.raises(Exception, match="checkpoint of another config"):
        ckpt_io.latest_checkpoint(tmp_path / "ckpt", changed)
