"""The degraded test condition and the channel augmentations: telephone band and codecs do what
they say, the degraded copy of a test set keeps ids, speakers and trials and is reproducible and
resumable, adding it to prepared data keeps what was made, and stage 7 scores it with intervals,
also by condition."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from helpers import TINY, assert_clean_error, run_step, set_args
from scipy.signal import welch

from voxadapt.augment.channel import lossy_codec, telephone
from voxadapt.augment.generate import HELDOUT_NOISE_KINDS, NOISE_KINDS, make_noise
from voxadapt.backend.scoring import read_scores
from voxadapt.config import load_config
from voxadapt.config.data import DegradedConfig
from voxadapt.corpus.degrade import conditions, make_degraded_set
from voxadapt.data.audio import read_utterance
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.data.trials import Trial, read_trials
from voxadapt.errors import ConfigError, VoxadaptError
from voxadapt.fileio import StageMarker
from voxadapt.layout import DataLayout
from voxadapt.metrics import eer
from voxadapt.report.bootstrap import metric_interval
from voxadapt.report.results import condition_groups
from voxadapt.stages import data as data_stage
from voxadapt.stages import manifests


def band_power(x: np.ndarray, lo: float, hi: float, sr: int = 16000) -> float:
    f, p = welch(x, sr, nperseg=1024)
    return float(p[(f >= lo) & (f < hi)].sum())


def test_telephone_keeps_300_to_3400_hz_and_the_length():
    x = (np.random.default_rng(0).standard_normal(32000) * 0.1).astype(np.float32)
    for seed in range(3):
        y, codec = telephone(x, 16000, np.random.default_rng(seed))
        assert codec in ("ulaw", "alaw", "gsm610") and y.shape == x.shape and y.dtype == np.float32
        inside = band_power(y, 500, 3000) / band_power(x, 500, 3000)
        above = band_power(y, 4200, 8000) / band_power(x, 4200, 8000)
        below = band_power(y, 0, 150) / band_power(x, 0, 150)
        assert inside > 0.5 and above < 1e-2 and below < 0.05, (codec, inside, above, below)


def test_lossy_codec_changes_the_signal_but_keeps_it():
    t = np.arange(32000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    seen = set()
    for seed in range(16):
        y, codec = lossy_codec(x, 16000, np.random.default_rng(seed))
        seen.add(codec)
        assert y.shape == x.shape and np.isfinite(y).all() and not np.array_equal(y, x)
        # Codecs delay the signal by a few ms: compare envelopes, which survive any codec.
        env_x, env_y = np.abs(x).reshape(-1, 800).mean(1), np.abs(y).reshape(-1, 800).mean(1)
        assert np.corrcoef(env_x, env_y)[0, 1] > 0.9, codec
    assert seen == {"mp3", "vorbis", "opus"}


def test_held_out_noise_kinds_are_not_augmentation_kinds():
    assert not set(HELDOUT_NOISE_KINDS) & set(NOISE_KINDS)
    for kind in HELDOUT_NOISE_KINDS:
        x = make_noise(kind, 1.0, 16000, np.random.default_rng(0))
        assert x.shape == (16000,) and np.isfinite(x).all() and 0.4 < np.max(np.abs(x)) <= 0.5


def test_degraded_copy_keeps_ids_and_trials_and_is_reproducible(tiny_data, tmp_path):
    src = tiny_data / "test"
    cfg = DegradedConfig(enabled=True)
    a = make_degraded_set(src, tmp_path / "a", cfg, 16000, nj=2)
    make_degraded_set(src, tmp_path / "b", cfg, 16000, nj=1)
    d = DataDir.load(src)
    assert a.utt2spk == d.utt2spk and (tmp_path / "a" / "trials").read_text() == (src / "trials").read_text()
    conditions = dict(line.split(" ", 1) for line in (tmp_path / "a" / "utt2condition").read_text().splitlines())
    kinds = [c.split(":")[0] for c in conditions.values()]
    assert set(kinds) == {"room", "noise", "telephone", "codec"}
    assert max(kinds.count(k) for k in set(kinds)) - min(kinds.count(k) for k in set(kinds)) <= 1  # drawn evenly
    for u in d.utterance_ids:
        ya, _ = sf.read(tmp_path / "a" / "flac" / f"{u}.flac")
        yb, _ = sf.read(tmp_path / "b" / "flac" / f"{u}.flac")
        assert np.array_equal(ya, yb)  # the same seed, the same audio (one process or two)
        assert len(ya) == len(read_utterance(d, u))
    # Resume: a file lost to a kill is made again, identical; the others are kept.
    lost = tmp_path / "a" / "flac" / f"{d.utterance_ids[0]}.flac"
    before, kept_mtime = lost.read_bytes(), (tmp_path / "a" / "flac" / f"{d.utterance_ids[1]}.flac").stat().st_mtime_ns
    lost.unlink()
    make_degraded_set(src, tmp_path / "a", cfg, 16000, nj=1)
    assert lost.read_bytes() == before
    assert (tmp_path / "a" / "flac" / f"{d.utterance_ids[1]}.flac").stat().st_mtime_ns == kept_mtime
    # Other settings: nothing of the old copy is reused.
    make_degraded_set(src, tmp_path / "a", DegradedConfig(enabled=True, conditions=["telephone"]), 16000, nj=1)
    assert {c.split(":")[0] for c in (tmp_path / "a" / "utt2condition").read_text().split()[1::2]} == {"telephone"}


def test_degraded_settings_are_checked():
    with pytest.raises(ConfigError, match="degraded.conditions must be among room, noise, telephone, codec"):
        load_config(None, ["data.degraded.conditions=[room, fog]"])
    with pytest.raises(ConfigError, match=r"degraded.noise_snr must be \[low, high\]"):
        load_config(None, ["data.degraded.noise_snr=[10, 0]"])
    proc = run_step("config", *set_args(["data.degraded.codec_compression=[0.5, 2]"]), "--get", "name")
    assert_clean_error(proc, "codec_compression must be within [0, 1]")


def test_adding_the_degraded_set_keeps_prepared_data(tiny_data, tmp_path):
    """Data prepared without the degraded set gets it added by stages 0-1, no refusal, nothing remade."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, symlinks=True)
    layout = DataLayout(data)
    manifests_before = (data / "manifests" / "train" / "cuts.jsonl.gz").stat().st_mtime_ns
    cfg = load_config(None, [*TINY, "data.degraded.enabled=true"])
    assert cfg.data.sets.scored == ["test", "test_degraded"]
    data_stage.run(cfg, layout, nj=2)
    manifests.run(cfg, layout)
    assert (data / "test_degraded" / "trials").is_file() and (data / "manifests" / "test_degraded" / "cuts.jsonl.gz").is_file()
    assert (data / "manifests" / "train" / "cuts.jsonl.gz").stat().st_mtime_ns == manifests_before
    data_stage.run(cfg, layout, nj=2)  # done: nothing to do
    changed = load_config(None, [*TINY, "data.degraded.enabled=true", "data.degraded.seed=5"])
    with pytest.raises(Exception, match="test_degraded: made with different settings"):
        data_stage.run(changed, layout, nj=2)


def test_marker_with_additions_is_stale_only_for_added_keys(tmp_path):
    marker = tmp_path / "m.json"
    StageMarker(marker, {"a": 1}).mark_done()
    assert StageMarker(marker, {"a": 1}).is_done(additions=True)
    assert not StageMarker(marker, {"a": 1, "b": 2}).is_done(additions=True)  # a list added: redo
    with pytest.raises(Exception, match="different settings"):
        StageMarker(marker, {"a": 1, "b": 2}).is_done()
    with pytest.raises(Exception, match="different settings"):
        StageMarker(marker, {"a": 2, "b": 2}).is_done(additions=True)  # a change is still refused


def test_pipeline_scores_the_degraded_list_with_intervals(micro_pipeline):
    results = json.loads((micro_pipeline / "exp" / "mhfa_tiny" / "results.json").read_text())
    assert set(results) == {"test", "test_degraded"}
    for name, methods in results.items():
        for method, r in methods.items():
            low, high = r["eer_ci"]
            assert low <= r["eer"] <= high and high - low > 0, (name, method, r)
            assert r["speakers"] == 4
    table = (micro_pipeline / "exp" / "mhfa_tiny" / "RESULTS.md").read_text()
    assert "| test_degraded | cosine | " in table and "EER (%) (95 % interval)" in table


def test_pipeline_scores_the_degraded_list_by_condition(micro_pipeline):
    """Each condition's EER and interval are those of the list's trials whose two utterances went
    through it, recomputed here from the scores file; every condition with both kinds of trial is
    reported; the clean list has no such table."""
    exp, data = micro_pipeline / "exp" / "mhfa_tiny", micro_pipeline / "data" / "test_degraded"
    results = json.loads((exp / "results.json").read_text())
    assert all("by_condition" not in r for r in results["test"].values())
    kind = {utt: c.split(":")[0] for utt, c in conditions(data).items()}
    spk = DataDir.load(data).utt2spk
    trials = read_trials(data / "trials")
    labels = np.array([t.target for t in trials])
    enroll_spk, test_spk = np.array([spk[t.enroll] for t in trials]), np.array([spk[t.test] for t in trials])
    masks = {k: np.array([kind[t.enroll] == kind[t.test] == k for t in trials]) for k in set(kind.values())}
    masks["mixed"] = np.array([kind[t.enroll] != kind[t.test] for t in trials])
    expected = {k for k, m in masks.items() if labels[m].any() and not labels[m].all()}
    assert len(expected) >= 2
    for method, r in results["test_degraded"].items():
        scores = read_scores(exp / "scores" / "test_degraded" / f"{method}.score", trials)
        assert set(r["by_condition"]) == expected, method
        for group, g in r["by_condition"].items():
            mask = masks[group]
            assert g["trials"] == mask.sum() and g["targets"] == labels[mask].sum()
            assert g["eer"] == pytest.approx(eer(scores[mask], labels[mask])[0], abs=1e-9), (method, group)
            ci = metric_interval("eer", [scores[mask]], labels[mask], enroll_spk[mask], test_spk[mask])
            assert g["eer_ci"] == pytest.approx([ci.low, ci.high], abs=1e-9), (method, group)
    table = (exp / "RESULTS.md").read_text().split("By condition")[1]
    methods = list(results["test_degraded"])
    assert "| trial list | condition | trials | targets | " + " | ".join(f"{m} EER (%) (95 % interval)" for m in methods) in table
    rows = [line for line in table.splitlines() if line.startswith("| test_degraded | ")]
    assert len(rows) == len(expected) and all(row.count("|") == 5 + len(methods) for row in rows)


def test_condition_groups_leave_enrolled_models_out():
    trials = [Trial("a", "b", True), Trial("a", "c", False), Trial("spk1", "b", True), Trial("c", "d", False)]
    groups = condition_groups(trials, {"a": "room", "b": "room", "c": "noise:siren:3.0dB", "d": "telephone:gsm"})
    assert {k: v.tolist() for k, v in groups.items()} == {"room": [True, False, False, False],
                                                          "mixed": [False, True, False, True]}


def test_a_damaged_utt2condition_is_named_with_its_line(tmp_path):
    (tmp_path / "utt2condition").write_text("u1 room\nu2\n")
    with pytest.raises(VoxadaptError, match=r"utt2condition:2: expected '<key> <value>', got 'u2'; fix or delete the line"):
        conditions(tmp_path)
    assert conditions(tmp_path / "missing") is None  # not a degraded set: no table by condition
