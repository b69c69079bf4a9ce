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


def as_before_the_pooling_rename(directory: Path) -> None:
    """Rewrite a model dir or package in place as voxadapt wrote it before config schema 3: the
    pooling head under model.backend, its weights under 'backend.'."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    config = directory / "config.yaml"
    text = config.read_text()
    assert text.startswith(f"schema_version: {SCHEMA_VERSION}\n") and "\n  pooling:\n" in text
    config.write_text(text.replace(f"schema_version: {SCHEMA_VERSION}", "schema_version: 2").replace("\n  pooling:\n", "\n  backend:\n"))
    for weights in directory.glob("*.safetensors"):
        with safe_open(str(weights), "pt") as f:
            state = {k.replace("pooling.", "backend.", 1) if k.startswith("pooling.") else k: f.get_tensor(k) for k in f.keys()}
            metadata = f.metadata()
        assert any(k.startswith("backend.") for k in state)
        save_file(state, str(weights), metadata=metadata)


def test_model_dir_and_adapters_package_saved_before_the_pooling_rename_embed_as_they_did(tmp_path):
    """model.backend became model.pooling (schema 3) and the module's weights 'pooling.': a trained-model
    dir and an adapters package written before still load, into the same embedding."""
    import torch
    from helpers import MICRO

    import voxadapt as api
    from voxadapt.data.conditioning import normalize_level
    from voxadapt.models.backbone import build_hf_model
    from voxadapt.models.loading import load_speaker_model
    from voxadapt.models.speaker import build_model, save_model_dir
    from voxadapt.package import make_package

    base = tmp_path / "base"
    build_hf_model("wavlm", "", load_config(None, MICRO).model.backbone.arch, 0).save_pretrained(base)
    cfg = load_config(None, MICRO + [f"model.backbone.path={base}", "model.backbone.arch={}", "model.backbone.normalize_waveform=false",
                                     "model.adapters.inner=true", "model.adapters.bottleneck=4"])
    model, head = build_model(cfg, 6)
    save_model_dir(tmp_path / "model", cfg, model, head, [f"c{i}" for i in range(6)])
    shutil.copytree(OLD_PACKAGE / "backend", tmp_path / "backend")
    shutil.copy(OLD_PACKAGE / "calibration.json", tmp_path / "backend")
    make_package(tmp_path / "model", tmp_path / "backend", tmp_path / "results.json", tmp_path / "pkg", adapters_only=True)
    as_before_the_pooling_rename(tmp_path / "model")
    as_before_the_pooling_rename(tmp_path / "pkg")
    wav = fixed_waveform()
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(normalize_level(wav, cfg.extract.level_dbfs))[None]).numpy()[0]
    loaded = load_speaker_model(tmp_path / "model")
    assert loaded.cfg == cfg
    with torch.no_grad():
        got = loaded.model(torch.from_numpy(normalize_level(wav, cfg.extract.level_dbfs))[None]).numpy()[0]
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(api.load(tmp_path / "pkg").embed(wav, sample_rate=16000), want, atol=1e-5)


def test_a_hand_written_config_with_the_old_pooling_key_loads(tmp_path):
    """A user's config naming model.backend, also on a base: that uses the new name."""
    (tmp_path / "old.yaml").write_text(f"base: {Path('conf/mhfa_tiny.yaml').resolve()}\nname: old\n"
                                       "model:\n  backend:\n    heads: 8\n")
    cfg = load_config(tmp_path / "old.yaml")
    assert cfg.model.pooling.heads == 8 and cfg.model.pooling.embed_dim == load_config("conf/mhfa_tiny.yaml").model.pooling.embed_dim
    with pytest.raises(ConfigError, match="'model.backend' was renamed 'model.pooling'"):
        load_config(None, ["model.backend.heads=8"])


def test_training_markers_and_checkpoints_made_before_the_pooling_rename_are_recognised(tmp_path):
    """A phase's done.json and checkpoints hold the model section (pooling under 'backend') and the
    model's state dict ('backend.' names): stage 3 of an old experiment has nothing to do, and a run
    resumes from an old checkpoint."""
    import torch
    from helpers import MICRO

    from voxadapt.fileio import StageMarker
    from voxadapt.models.speaker import build_model, model_fingerprint
    from voxadapt.train import checkpoint as ckpt_io

    cfg = load_config(None, MICRO)
    now = {"model": model_fingerprint(cfg.model), "phase": cfg.train.phases[0].fingerprint()}
    before = {**now, "model": {("backend" if k == "pooling" else k): v for k, v in now["model"].items()}}
    StageMarker(tmp_path / "done.json", before).mark_done()
    assert StageMarker(tmp_path / "done.json", now).is_done()
    other = {**now, "model": model_fingerprint(load_config(None, MICRO + ["model.pooling.heads=2"]).model)}
    with pytest.raises(Exception, match="made with different settings"):
        StageMarker(tmp_path / "done.json", other).is_done()
    model, _ = build_model(cfg, 6)
    state = {k.replace("pooling.", "backend.", 1): v for k, v in model.state_dict().items()}
    ckpt_io.save_checkpoint(tmp_path / "ckpt", 3, {"fingerprint": before, "step": 3, "model": state})
    resumed, _ = build_model(load_config(None, MICRO + ["seed=2"]), 6)
    resumed.load_state_dict(ckpt_io.latest_checkpoint(tmp_path / "ckpt", now)["model"])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in resumed.state_dict().items())


def test_markers_written_before_a_stage_key_existed_match_only_its_old_value(tmp_path):
    """Stage 6 before --binary, stage 7 before scoring.asnorm_cohort and training before
    loader.shards wrote no such key (voxadapt/compat.py's ADDED): those markers are of the old
    behaviour, and only of it."""
    import dataclasses

    from voxadapt.errors import VoxadaptError
    from voxadapt.fileio import StageMarker

    cfg = load_config(None)
    old_scoring = {k: v for k, v in dataclasses.asdict(cfg.scoring).items() if k != "asnorm_cohort"}
    old_loader = {k: v for k, v in dataclasses.asdict(cfg.loader).items() if not k.startswith("shard")}
    cohort = load_config(None, ["scoring.asnorm_cohort=cohort.scp"]).scoring
    cases = [({"scoring": old_scoring, "xvectors": "x"}, {"scoring": cfg.scoring.fingerprint(stage=6), "xvectors": "x", "binary": True},
              {"binary": False}),
             ({"scoring": old_scoring}, {"scoring": cfg.scoring.fingerprint(stage=7)}, {"scoring": cohort.fingerprint(stage=7)}),
             ({"loader": old_loader}, {"loader": cfg.loader.fingerprint()},
              {"loader": load_config(None, ["loader.shards=true"]).loader.fingerprint()})]
    assert cohort.fingerprint(stage=6) == cfg.scoring.fingerprint(stage=6)  # the cohort is stage 7's alone
    for i, (old, now, changed) in enumerate(cases):
        StageMarker(tmp_path / f"{i}.json", old).mark_done()
        assert StageMarker(tmp_path / f"{i}.json", now).is_done()
        with pytest.raises(VoxadaptError, match="made with different settings"):
            StageMarker(tmp_path / f"{i}.json", {**now, **changed}).is_done()


def test_file_io_reads_markers_without_the_config_package():
    """The low-level I/O module checks markers against voxadapt/compat.py alone."""
    import subprocess
    import sys

    code = "import sys, voxadapt.fileio; print(sorted(m for m in sys.modules if m.startswith('voxadapt.config')))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
