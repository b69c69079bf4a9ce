#!/usr/bin/env python3
"""Score a trial list (Kaldi 'enroll test target|nontarget' or VoxCeleb '1|0 path1 path2') from
any Kaldi xvector.scp, with cosine, AS-norm or PLDA; writes Kaldi's 'enroll test score' lines.
The back-end comes from --backend DIR (stage 6's, or train_backend.py --scp's) or single files."""

from voxadapt.pyscript import make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    parser.add_argument("--trials", required=True)
    parser.add_argument("--scp", required=True, help="x-vectors of the test side (and enrolment, by default)")
    parser.add_argument("--enroll-scp", help="x-vectors of the enrolment side, if separate")
    parser.add_argument("--method", choices=["cosine", "asnorm", "plda"], default="cosine")
    parser.add_argument("--backend", help="dir with mean.vec [lda.mat plda cohort.ark]")
    parser.add_argument("--mean", help="Kaldi vector to subtract (default: the mean of --scp)")
    parser.add_argument("--lda", help="Kaldi LDA matrix (plda)")
    parser.add_argument("--plda", help="Kaldi PLDA model (plda)")
    parser.add_argument("--cohort-scp", help="AS-norm cohort x-vectors (default: the back-end's cohort.ark)")
    parser.add_argument("--top-n", type=int, default=300)
    parser.add_argument("--out", required=True, help="score file")
    args = parser.parse_args(argv)
    from pathlib import Path

    import numpy as np

    from voxadapt.backend import kaldi_format as kf
    from voxadapt.backend.plda import Plda
    from voxadapt.backend.scoring import Backend, Embeddings, score_trials, write_scores
    from voxadapt.data.trials import read_trials
    from voxadapt.report.results import evaluate

    emb = Embeddings.from_scp(args.scp)
    enroll = Embeddings.from_scp(args.enroll_scp) if args.enroll_scp else None
    if args.backend:
        backend = Backend.load(Path(args.backend))
        if args.cohort_scp:  # e.g. x-vectors of the evaluation domain instead of the training speakers
            backend.cohort = Embeddings.from_scp(args.cohort_scp).matrix
    else:
        backend = Backend(kf.read_vector(args.mean) if args.mean else emb.matrix.mean(0),
                          kf.read_matrix(args.lda) if args.lda else None,
                          Plda(*kf.read_plda(args.plda)) if args.plda else None,
                          Embeddings.from_scp(args.cohort_scp).matrix if args.cohort_scp else None)
    trials = read_trials(args.trials)
    scores = score_trials(backend, emb, trials, [args.method], args.top_n, args.trials, enroll)[args.method]
    write_scores(Path(args.out), trials, scores)
    labels = np.array([t.target for t in trials])
    summary = f", EER {100 * evaluate(scores, labels, [], None)['eer']:.2f}%" if labels.any() and not labels.all() else ""
    print(f"{args.out}: {len(trials)} trials scored with {args.method}{summary}")
    return 0


if __name__ == "__main__":
    run_main(main)
