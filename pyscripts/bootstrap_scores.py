#!/usr/bin/env python3
"""Compare two score (or LLR) files of one trial list with a speaker bootstrap: prints
metric(B) - metric(A) and its 95 % interval; an interval containing 0 means the list cannot
tell the systems apart. Score files are Kaldi's 'enroll test score' (stage 7's
scores/<list>/<method>.score, or .llr for cllr).
    python pyscripts/bootstrap_scores.py --trials data/test/trials --utt2spk data/test/utt2spk \\
        --a exp/x/scores/test/cosine.llr --b exp/y/scores/test/cosine.llr --metric cllr"""

from voxadapt.pyscript import make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    parser.add_argument("--trials", required=True)
    parser.add_argument("--utt2spk", required=True, help="speakers of the trials' utterances (or models)")
    parser.add_argument("--a", required=True, help="score file of system A")
    parser.add_argument("--b", required=True, help="score file of system B")
    parser.add_argument("--metric", choices=["eer", "cllr", "mindcf0.01", "mindcf0.05"], default="eer",
                        help="cllr: give LLR files")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from pathlib import Path

    import numpy as np

    from voxadapt.backend.scoring import read_scores
    from voxadapt.data.kaldi_dir import read_table
    from voxadapt.data.trials import read_trials
    from voxadapt.errors import DataError, located
    from voxadapt.report.bootstrap import difference_interval

    trials = read_trials(args.trials)
    utt2spk = {k: line.value for k, line in read_table(Path(args.utt2spk), check_order=False).items()}
    unknown = sorted({u for t in trials for u in (t.enroll, t.test)} - utt2spk.keys())
    if unknown:
        raise DataError(located(args.utt2spk, None, f"no speaker for {len(unknown)} id(s) of the trials, e.g. '{unknown[0]}'",
                                "give the utt2spk of the trial list's data dir"))

    a, b = read_scores(args.a, trials), read_scores(args.b, trials)
    labels = np.array([t.target for t in trials])
    if labels.all() or not labels.any():
        raise DataError(located(args.trials, None, "needs target and non-target trials", "give a labelled trial list"))
    spk_e = np.array([utt2spk[t.enroll] for t in trials])
    spk_t = np.array([utt2spk[t.test] for t in trials])
    d = difference_interval(args.metric, [a], [b], labels, spk_e, spk_t, args.draws, args.seed)
    print(f"{args.metric}: B - A = {d.value:+.4f} (95 % interval {d.low:+.4f} to {d.high:+.4f}; "
          f"{len(set(spk_e) | set(spk_t))} speakers, {d.draws} draws)")
    return 0


if __name__ == "__main__":
    run_main(main)
