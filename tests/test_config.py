from __future__ import annotations

import pytest
from helpers import assert_clean_error, run_step

from voxadapt.config import load_config
from voxadapt.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_and_shipped_config():
    cfg = load_config("conf/mhfa_tiny.yaml")
    assert cfg.name == "mhfa_tiny" and cfg.data.corpus == "synthetic"
    assert cfg.data.sets.all == ["train", "dev", "test", "test_degraded"]
    assert cfg.data.sets.tests == ("test",) and cfg.data.sets.scored == ["test", "test_degraded"]


def test_unknown_key_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key 'data.synthetic.num_speakers'"):
        load_config(write(tmp_path, "data:\n  synthetic:\n    num_speakers: 3\n"))


def test_wrong_type_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"data.synthetic.num_train_speakers: expected int, got 'many'"):
        load_config(write(tmp_path, "data:\n  synthetic:\n    num_train_speakers: many\n"))
    with pytest.raises(ConfigError, match="expected int, got True"):
        load_config(write(tmp_path, "seed: true\n"))


def test_impossible_value_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="min_duration <= max_duration"):
        load_config(write(tmp_path, "data:\n  synthetic:\n    min_duration: 5\n    max_duration: 3\n"))
    with pytest.raises(ConfigError, match="must be one of 'synthetic', 'voxceleb', 'kaldi'"):
        load_config(None, ["data.corpus=librispeech"])


def test_overrides_are_typed():
    cfg = load_config(None, ["data.synthetic.num_train_speakers=7", "name=x"])
    assert cfg.data.synthetic.num_train_speakers == 7 and cfg.name == "x"
    with pytest.raises(ConfigError, match="write overrides as key.path=value"):
        load_config(None, ["data.corpus"])


def test_bad_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"c.yaml:2: not valid YAML"):
        load_config(write(tmp_path, "name: a\nseed: x: y\n"))


def test_missing_config_file_cli(tmp_path):
    proc = run_step("config", "--config", str(tmp_path / "nope.yaml"))
    assert_clean_error(proc, "nope.yaml: config file not found")


def test_show_config_prints_a_value():
    proc = run_step("config", "--config", "conf/mhfa_tiny.yaml", "--get", "name")
    assert proc.returncode == 0 and proc.stdout.strip() == "mhfa_tiny"


def test_base_configs_merge(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nloader:\n  batch_size: 8\n  crop_seconds: 1.5\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nname: b\nloader:\n  batch_size: 16\n")
    cfg = load_config(tmp_path / "b.yaml")
    assert cfg.name == "b" and cfg.loader.batch_size == 16 and cfg.loader.crop_seconds == 1.5
    (tmp_path / "c.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match="includes itself in a loop"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("base: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found \(base of"):
        load_config(tmp_path / "d.yaml")


def test_every_shipped_config_loads():
    from pathlib import Path

    for path in sorted(Path("conf").glob("*.yaml")):
        assert load_config(path).name, path


def test_markers_made_before_a_key_was_added_still_match():
    """A fingerprint written before a key existed is the fingerprint of the behaviour before it (e.g.
    a model trained before sub-centres, or scored before QMF), and only of that: where the default
    changed since (stage 5's engine), an old marker is a change."""
    import copy
    import dataclasses

    from voxadapt.compat import ADDED, fingerprint_changes
    from voxadapt.stages.extract import conditioning_settings

    def fingerprint(cfg) -> dict:  # noqa: ANN001
        return {"model": dataclasses.asdict(cfg.model), "phase": cfg.train.phases[0].fingerprint(),
                "scoring": dataclasses.asdict(cfg.scoring), "synthetic": dataclasses.asdict(cfg.data.synthetic),
                "loader": cfg.loader.fingerprint(), "binary": True, "conditioning": conditioning_settings(cfg.extract)}

    cfg = load_config(None, ["extract.engine=auto"])
    now = fingerprint(cfg)
    old = copy.deepcopy(now)  # nested sections too (model.pooling)
    for added in ADDED:
        *path, key = added.split(".")
        node = old
        for name in path:
            node = node[name]
        node.pop(key, None)  # conditioning.int8 is written for the int8 engine only
    assert old != now and fingerprint_changes(old, now) == []
    assert fingerprint_changes(old, fingerprint(load_config(None))) == ["conditioning"]
    changed = load_config(None, ["model.subcenters=3"])
    assert fingerprint_changes(old, {**now, "model": dataclasses.asdict(changed.model)}) == ["model"]
    # Speed options are no part of a phase's fingerprint: a run resumes with them changed.
    fast = load_config(None, ["train.phases.0.compile=true", "train.phases.0.activation_checkpointing=true"])
    assert fast.train.phases[0].fingerprint() == cfg.train.phases[0].fingerprint()


def test_cnn_grad_scale_checks_and_old_fingerprints():
    """cnn_grad_scale > 0 only with the whole backbone trained and no adapters; a fingerprint written
    before the key existed is that of a frozen CNN (0), never of a trained one."""
    from voxadapt.compat import fingerprint_changes

    with pytest.raises(ConfigError, match="cnn_grad_scale > 0 trains the CNN below every transformer layer"):
        load_config(None, ["train.phases.0.trainable_layers=2", "train.phases.0.cnn_grad_scale=0.1"])
    with pytest.raises(ConfigError, match="cnn_grad_scale must be in"):
        load_config(None, ["train.phases.0.cnn_grad_scale=-0.1"])
    with pytest.raises(ConfigError, match=r"phase 'main': cnn_grad_scale > 0 fine-tunes the whole backbone; with model.adapters"):
        load_config(None, ["model.adapters.lora=true", "train.phases.0.cnn_grad_scale=0.1"])
    with pytest.raises(ConfigError, match="phase 'lm': cnn_grad_scale"):
        load_config(None, ["model.adapters.inner=true", "adapt.phases=[{name: lm, trainable_layers: -1, cnn_grad_scale: 0.5}]"])
    frozen = load_config(None).train.phases[0].fingerprint()
    old = {k: v for k, v in frozen.items() if k != "cnn_grad_scale"}
    assert "cnn_grad_scale" in frozen and fingerprint_changes({"phase": old}, {"phase": frozen}) == []
    trained = load_config(None, ["train.phases.0.cnn_grad_scale=0.1"]).train.phases[0].fingerprint()
    assert fingerprint_changes({"phase": old}, {"phase": trained}) == ["phase"]


# The MHFA authors' published WeSpeaker configs (examples/voxceleb/v4/conf/MHFA/ of
# BUTSpeechFIT/wespeaker_ssl_public): lr before their scaling by (GPUs x per-GPU batch) / 64.
AUTHORS_LR = {("mhfa_wavlm_base_plus", "frozen"): 0.1, ("mhfa_wavlm_base_plus", "joint"): 1e-4,
              ("mhfa_wavlm_base_plus", "large_margin"): 1e-5, ("mhfa_wavlm_large", "frozen"): 0.1,
              ("mhfa_wavlm_large", "joint"): 5e-5, ("mhfa_wavlm_large", "large_margin"): 1e-5}
VOX2_DEV_UTTERANCES = 1_092_009


@pytest.mark.parametrize("name", ["mhfa_wavlm_base_plus", "mhfa_wavlm_large"])
def test_voxceleb_configs_follow_the_authors_schedule(name):
    cfg = load_config(f"conf/{name}.yaml")
    assert not cfg.augment.speed_perturb and cfg.loader.batches_per_epoch == 0
    # An epoch is one pass over VoxCeleb2 dev's utterances: 2,132 steps at their 4 x 128 crops.
    assert VOX2_DEV_UTTERANCES // cfg.loader.batch_size == 2132 and cfg.loader.crop_seconds == 3.0
    for phase in cfg.train.phases + cfg.adapt.phases:
        batch = phase.batch_size or cfg.loader.batch_size
        assert phase.lr * 64 / batch == pytest.approx(AUTHORS_LR[name, phase.name]), phase.name
        assert (phase.trainable_layers == 0 or phase.backbone_lr == phase.lr) and phase.layer_decay == 1.0  # one lr
        assert phase.weight_decay == 1e-7 and phase.precision == "fp32" and phase.average_last == 2
        assert phase.l2sp == "none" and phase.schedule == "exponential"
        assert phase.cnn_grad_scale == (0.1 if phase.trainable_layers == -1 else 0.0)  # their feature_grad_mult
        # Their layer_drop 0.05 wherever the backbone trains (train_hubert.py puts every parameter in the optimiser).
        assert phase.layerdrop == (0.05 if phase.trainable_layers == -1 else 0.0) and phase.train_embedding
    assert cfg.model.backbone.normalize_waveform == (name == "mhfa_wavlm_large")


@pytest.mark.parametrize("overrides, message", [
    (["train.phases.0.layerdrop=1.0"], r"layerdrop must be in \[0, 1\)"),
    (["train.phases.0.layerdrop=0.1", "train.phases.0.trainable_layers=0"],
     "phase 'main': layerdrop > 0 does nothing in a frozen phase"),
    (["train.phases.0.layerdrop=0.1", "train.phases.0.compile=true"], "layerdrop > 0 with compile: true would recompile"),
    (["train.phases.0.layer_decay_from=middle"], "layer_decay_from"),
])
def test_layerdrop_and_layer_decay_from_refuse_what_cannot_work(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
    # With adapters a phase that keeps the pre-trained weights frozen still trains (in training mode).
    load_config(None, ["model.adapters.inner=true", "train.phases.0.trainable_layers=0", "train.phases.0.layerdrop=0.1"])


@pytest.mark.parametrize("override, message", [
    ("train.max_nonfinite_steps=0", "max_nonfinite_steps must be >= 1"),
    ("train.collective_timeout_s=0", "collective_timeout_s must be > 0"),
])
def test_training_guards_refuse_impossible_values(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
