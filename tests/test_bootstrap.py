"""Speaker bootstrap of a metric difference: no difference gives a zero interval, a real one
excludes zero, and the command's inputs fail with one-line errors."""

from __future__ import annotations

import numpy as np
from helpers import assert_clean_error, run_py

from voxadapt.report.bootstrap import speaker_bootstrap


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
    d = speaker_bootstrap("eer", noisy, noisy.copy(), labels, spk_e, spk_t, draws=200)
    assert (d.value, d.low, d.high) == (0.0, 0.0, 0.0) and d.draws == 200
    better = labels * 3.0 + rng.normal(size=len(labels))
    d = speaker_bootstrap("eer", noisy, better, labels, spk_e, spk_t, draws=200)
    assert d.value < 0 and d.low < d.high < 0


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
