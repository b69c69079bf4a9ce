"""Speaker bootstrap of a metric difference: no difference gives a zero interval, a real one
excludes zero, and the command's inputs fail with one-line errors."""

from __future__ import annotations

import numpy as np
from helpers import assert_clean_error, run_py

from voxadapt.metrics import cllr, eer, min_dcf
from voxadapt.report.bootstrap import difference_interval, metric_interval, speaker_weights, weighted_metric


def trial_list(rng, speakers=20, per=4):
    utts = [(f"s{s:02d}-{i}", f"s{s:02d}") for s in range(speakers) for i in range(per)]
    pairs = [(a, b) for i, a in enumerate(utts) for b in utts[i + 1:]]
    labels = np.array([a[1] == b[1] for a, b in pairs])
    return pairs, labels


def test_no_difference_has_a_zero_interval_and_a_real_one_excludes_zero():
    rng = np.random.default_rng(0)
    pairs, labels = trial_list(rng)
    spk_e = np.array([a[1] for a, _ in pairs])
    spk_t = np.array([b[1] for _, b in pairs])
    noisy = labels * 1.0 + rng.normal(size=len(labels))
    d = difference_interval("eer", [noisy], [noisy.copy()], labels, spk_e, spk_t, draws=200)
    assert (d.value, d.low, d.high) == (0.0, 0.0, 0.0) and d.draws == 200 and not d.excludes_zero
    better = labels * 3.0 + rng.normal(size=len(labels))
    d = difference_interval("eer", [noisy], [better], labels, spk_e, spk_t, draws=200)
    assert d.value < 0 and d.low < d.high < 0 and d.excludes_zero


def test_reweighted_metrics_equal_metrics_of_the_repeated_trials():
    """A draw's weights give the metric of the list with each trial repeated that many times."""
    rng = np.random.default_rng(3)
    pairs, labels = trial_list(rng, speakers=8)
    spk_e = np.array([a[1] for a, _ in pairs])
    spk_t = np.array([b[1] for _, b in pairs])
    scores = np.round(labels * 1.5 + rng.normal(size=len(labels)), 1)  # ties, as real scores have
    assert metric_interval("eer", [scores], labels, spk_e, spk_t, draws=1).value == eer(scores, labels)[0]
    for w in speaker_weights(spk_e, spk_t, draws=5, seed=1):
        rows = np.repeat(np.arange(len(labels)), w.astype(int))
        assert abs(weighted_metric("eer", scores, labels)(w) - eer(scores[rows], labels[rows])[0]) < 1e-12
        assert abs(weighted_metric("mindcf0.05", scores, labels)(w) - min_dcf(scores[rows], labels[rows], 0.05)[0]) < 1e-12
        assert abs(weighted_metric("cllr", scores, labels)(w) - cllr(scores[rows], labels[rows])) < 1e-12


def test_interval_narrows_with_more_speakers_and_seeds_average():
    rng = np.random.default_rng(4)
    widths = []
    for speakers in (10, 160):
        pairs, labels = trial_list(rng, speakers=speakers, per=3)
        spk_e = np.array([a[1] for a, _ in pairs])
        spk_t = np.array([b[1] for _, b in pairs])
        # Speakers differ in how hard they are: the bootstrap over speakers must see it.
        hard = {s: rng.uniform(0.5, 3.0) for s in sorted(set(spk_e))}  # sorted: set order varies by process
        scores = labels * np.array([hard[s] for s in spk_e]) + rng.normal(size=len(labels))
        i = metric_interval("eer", [scores], labels, spk_e, spk_t, draws=300)
        assert i.low < i.value < i.high
        widths.append(i.high - i.low)
    assert widths[1] < widths[0] / 2  # 16x the speakers: about a quarter of the width
    two = metric_interval("eer", [scores, scores + 0.01 * rng.normal(size=len(scores))], labels, spk_e, spk_t, draws=50)
    assert abs(two.value - eer(scores, labels)[0]) < 0.01


def test_command_compares_two_score_files(tmp_path):
    rng = np.random.default_rng(1)
    pairs, labels = trial_list(rng, speakers=6, per=3)
    (tmp_path / "trials").write_text("".join(f"{a[0]} {b[0]} {'target' if y else 'nontarget'}\n"
                                             for (a, b), y in zip(pairs, labels)))
    (tmp_path / "utt2spk").write_text("".join(f"{s}-{i} {s}\n" for s in sorted({a[1] for a, _ in pairs})
                                              for i in range(3)))
    for name, sep in (("a", 1.0), ("b", 4.0)):
        scores = labels * sep + rng.normal(size=len(labels))
        (tmp_path / name).write_text("".join(f"{a[0]} {b[0]} {s:.6f}\n" for (a, b), s in zip(pairs, scores)))
    common = ["--trials", str(tmp_path / "trials"), "--utt2spk", str(tmp_path / "utt2spk"), "--draws", "100"]
    proc = run_py("bootstrap_scores.py", *common, "--a", str(tmp_path / "a"), "--b", str(tmp_path / "b"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("eer: B - A = -") and "6 speakers, 100 draws" in proc.stdout
    (tmp_path / "short").write_text((tmp_path / "a").read_text().split("\n", 1)[1])
    assert_clean_error(run_py("bootstrap_scores.py", *common, "--a", str(tmp_path / "a"), "--b", str(tmp_path / "short")),
                       "short", "no score for 1 trial(s)")
    (tmp_path / "bad").write_text("x y\n")
    assert_clean_error(run_py("bootstrap_scores.py", *common, "--a", str(tmp_path / "bad"), "--b", str(tmp_path / "a")),
                       "bad:1", "expected 'enroll test score'")
    (tmp_path / "u2s").write_text("s00-0 s00\n")
    assert_clean_error(run_py("bootstrap_scores.py", "--trials", str(tmp_path / "trials"), "--utt2spk", str(tmp_path / "u2s"),
                              "--a", str(tmp_path / "a"), "--b", str(tmp_path / "b")), "u2s", "no speaker for")
