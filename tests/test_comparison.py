"""Comparison tables: intervals next to every EER, a difference marked only when its paired
interval excludes 0 and the seeds agree, the evaluation-scale overlay in the derived configs, the MFCC reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from helpers import ROOT, TINY, assert_clean_error, run_py

from voxadapt import mfcc_reference
from voxadapt.config import load_config
from voxadapt.data.trials import Trial
from voxadapt.errors import ConfigError, VoxadaptError
from voxadapt.layout import DataLayout, ExpLayout
from voxadapt.report.comparison import Run, System, TrialList, derived_config, markdown, overlay_sections


def trial_list(rng: np.random.Generator, name: str, speakers: int = 40, per: int = 4) -> TrialList:
    utts = [(f"s{s:02d}-{i}", f"s{s:02d}") for s in range(speakers) for i in range(per)]
    pairs = [(a, b) for i, a in enumerate(utts) for b in utts[i + 1:]]
    trials = [Trial(a[0], b[0], a[1] == b[1]) for a, b in pairs]
    return TrialList(name, trials, np.array([a[1] == b[1] for a, b in pairs]), np.array([a[1] for a, _ in pairs]),
                     np.array([b[1] for _, b in pairs]))


def test_table_marks_only_differences_the_paired_interval_excludes():
    rng = np.random.default_rng(0)
    lists = [trial_list(rng, "test"), trial_list(rng, "test_degraded")]

    def system(label: str, separation: float, seeds: int = 3, base: System | None = None) -> System:
        s = System(label, trainable=0.1, seconds_per_step=1.0)
        for tl in lists:
            for m in ("cosine", "asnorm"):
                s.scores[(tl.name, m)] = [tl.labels * separation + rng.normal(size=len(tl.labels)) for _ in range(seeds)]
                s.min_dcf[(tl.name, m)] = [0.5] * seeds
        return s

    ref, better = system("ref", 1.0), system("better", 3.0)
    same = System("same", dict(ref.scores), dict(ref.min_dcf))  # the same scores: a zero difference
    mfcc = System("mfcc")
    for tl in lists:
        mfcc.scores[(tl.name, "cosine")] = [tl.labels * 0.5 + rng.normal(size=len(tl.labels))]
        mfcc.min_dcf[(tl.name, "cosine")] = [0.9]
    table = markdown([ref, better, same, mfcc], lists, "cosine", "ref")
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines()[2:]}
    assert set(rows) == {"ref", "better", "same", "mfcc"}
    assert rows["better"].count("**better**") == 2 and "**" not in rows["same"]
    assert rows["mfcc"].count("**worse**") == 2
    cells = rows["ref"].split(" | ")
    eer, interval = cells[1].split(" (")
    low, high = (float(v) for v in interval.rstrip(")").split("-"))
    assert low < float(eer) < high and len(cells[2].split(" / ")) == 3  # the mean's interval, per-seed EERs
    assert "mfcc" not in markdown([ref, better, mfcc], lists, "asnorm", "ref")  # no AS-norm scores: no row


def test_a_difference_the_seeds_disagree_on_is_not_marked():
    """Two seeds far better than the reference and one worse: the bootstrap of the seed mean
    excludes 0, but the table says the seeds disagree instead of calling it better."""
    rng = np.random.default_rng(1)
    tl = trial_list(rng, "test")

    def system(label: str, separations: list[float]) -> System:
        s = System(label, trainable=0.1, seconds_per_step=1.0)
        s.scores[(tl.name, "cosine")] = [tl.labels * x + rng.normal(size=len(tl.labels)) for x in separations]
        s.min_dcf[(tl.name, "cosine")] = [0.5] * len(separations)
        return s

    table = markdown([system("ref", [1.0] * 3), system("mixed", [3.0, 3.0, 0.3]), system("agreed", [3.0] * 3)],
                     [tl], "cosine", "ref")
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in table.splitlines()[2:]}
    _, mixed_high = (float(v) for v in rows["mixed"][-1].split("(")[1].split(")")[0].split(" to "))
    assert mixed_high < 0  # the seed mean alone would have been marked better
    assert rows["mixed"][-1].endswith("(seeds disagree) |") and "**" not in rows["mixed"][-1]
    assert rows["agreed"][-1].endswith("**better** |")


def test_overlay_sets_data_and_loader_of_every_run(tmp_path):
    overlay = overlay_sections(ROOT / "conf" / "eval_synthetic.yaml")
    assert set(overlay) == {"data", "loader", "scoring"}
    path = derived_config(Run(ROOT / "conf" / "adapters_tiny.yaml", 2, "adapters_tiny_s2"), tmp_path, overlay)
    cfg = load_config(path)
    assert (cfg.name, cfg.seed) == ("adapters_tiny_s2", 2)
    assert cfg.data.synthetic.num_train_speakers >= 1000 and cfg.data.synthetic.num_test_speakers >= 200
    assert cfg.loader.batches_per_epoch == 100 and cfg.data.sets.scored == ["test", "test_degraded"]
    assert cfg.scoring.asnorm_top_n == 100 and cfg.scoring.lda_dim == load_config(ROOT / "conf" / "adapters_tiny.yaml").scoring.lda_dim
    assert cfg.model.adapters.inner  # the system's own settings stay
    assert yaml.safe_load(path.read_text())["base"].endswith("adapters_tiny.yaml")


def test_damaged_overlay_is_a_config_error_naming_its_line(tmp_path):
    bad = tmp_path / "eval.yaml"
    bad.write_text("data:\n  synthetic: [1\n")
    with pytest.raises(ConfigError, match=r"eval.yaml:3: not valid YAML"):
        overlay_sections(bad)
    bad.write_text("data:\n  synthetic:\n    num_test_speaker: 9\n")
    with pytest.raises(ConfigError, match="unknown key 'data.synthetic.num_test_speaker'"):
        overlay_sections(bad)
    proc = run_py("compare.py", "--configs", "conf/mhfa_tiny.yaml", "--overlay", str(tmp_path / "missing.yaml"),
                  "--exp", str(tmp_path / "exp"), cwd=ROOT)
    assert_clean_error(proc, "missing.yaml: config file not found")
    assert not (tmp_path / "exp").exists()  # nothing trained or written before the overlay is checked


def test_mfcc_reference_scores_every_list_once(tiny_data, tmp_path):
    cfg = load_config(None, TINY)
    exp = ExpLayout.of(tmp_path, mfcc_reference.NAME)
    table = mfcc_reference.run(cfg, DataLayout(tiny_data), exp, nj=2)
    results = json.loads(exp.results_json.read_text())
    r = results["test"]["cosine"]
    assert r["eer_ci"][0] <= r["eer"] <= r["eer_ci"][1] and 0 < r["eer"] < 0.5
    assert (exp.scores("test") / "cosine.score").is_file() and "| test | cosine |" in table
    stamp = exp.results_json.stat().st_mtime_ns
    assert mfcc_reference.run(cfg, DataLayout(tiny_data), exp, nj=2) == table
    assert exp.results_json.stat().st_mtime_ns == stamp  # done: not recomputed


def test_mfcc_reference_on_the_validation_list_scores_it_as_a_test_list(tiny_data, tmp_path, monkeypatch):
    """validation_eer (the learning-curve figures' line) is the reference's EER on the dev list,
    the same number its run() gives when dev is scored as a test list."""
    from voxadapt.layout import CorpusSets

    cfg = load_config(None, TINY)
    got = mfcc_reference.validation_eer(cfg, DataLayout(tiny_data), nj=2)
    monkeypatch.setattr(type(cfg.data), "sets", property(lambda self: CorpusSets("train", "dev", ("dev",))))
    exp = ExpLayout.of(tmp_path, mfcc_reference.NAME)
    mfcc_reference.run(cfg, DataLayout(tiny_data), exp, nj=2)
    assert got == pytest.approx(100 * json.loads(exp.results_json.read_text())["dev"]["cosine"]["eer"], abs=1e-9)
    monkeypatch.setattr(type(cfg.data), "sets", property(lambda self: CorpusSets("train", None, ("test",))))
    with pytest.raises(VoxadaptError, match="no validation set with a trial list"):
        mfcc_reference.validation_eer(cfg, DataLayout(tiny_data))
