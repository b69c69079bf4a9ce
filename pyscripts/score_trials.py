#!/usr/bin/env python3
"""Score a trial list (Kaldi 'enroll test target|nontarget' or VoxCeleb '1|0 path1 path2') from
any Kaldi xvector.scp, with cosine, AS-norm, S-norm or PLDA; writes Kaldi's 'enroll test score'
lines. The back-end comes from --backend DIR (stage 6's, train_backend.py --scp's, or a Kaldi
x-vector dir with mean.vec, transform.mat, plda) or single files; --mean, --lda and --plda take
Kaldi rxfilenames ('-' for stdin, "ivector-copy-plda --smoothing=0.1 plda - |").

Enrolment by speaker, as Kaldi's ivector-plda-scoring --num-utts: --enroll-map (spk2utt format:
'model utt1 utt2 ...') averages each model's utterance x-vectors; or --enroll-scp with models
already averaged (spk_xvector.scp) and --num-utts num_utts.ark. PLDA then scores each model with
its n-utterance posterior."""

from voxadapt.pyscript import make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    parser.add_argument("--trials", required=True)
    parser.add_argument("--scp", required=True, help="x-vectors of the test side (and enrolment, by default)")
    parser.add_argument("--enroll-scp", help="x-vectors of the enrolment side, if separate (utterances, or models)")
    parser.add_argument("--enroll-map", help="model -> its utterances (spk2utt format): speaker-level enrolment")
    parser.add_argument("--num-utts", help="Kaldi num_utts.ark (text) for the models of --enroll-scp")
    parser.add_argument("--method", choices=["cosine", "asnorm", "snorm", "plda"], default="cosine")
    parser.add_argument("--backend", help="dir with mean.vec [lda.mat|transform.mat plda cohort.ark]")
    parser.add_argument("--mean", help="Kaldi vector to subtract (default: the mean of --scp)")
    parser.add_argument("--lda", help="Kaldi LDA matrix, e.g. transform.mat (plda)")
    parser.add_argument("--plda", help="Kaldi PLDA model (plda)")
    parser.add_argument("--plda-smoothing", type=float, default=0.0,
                        help="as ivector-copy-plda --smoothing: add this share of the between-class covariance to the "
                             "within-class one (default: 0)")
    parser.add_argument("--cohort-scp", help="AS-norm / S-norm cohort x-vectors (default: the back-end's cohort.ark)")
    parser.add_argument("--top-n", type=int, default=300)
    parser.add_argument("--out", required=True, help="score file")
    args = parser.parse_args(argv)
    from pathlib import Path

    from voxadapt.backend import kaldi_format as kf
    from voxadapt.backend.enrollment import enrolment_side
    from voxadapt.backend.plda import Plda
    from voxadapt.backend.scoring import Backend, Embeddings, write_scores
    from voxadapt.backend.trial_list import score_list, with_cohort
    from voxadapt.errors import VoxadaptError

    if args.backend and (args.mean or args.lda or args.plda):
        raise VoxadaptError("give --backend DIR or single files (--mean, --lda, --plda), not both")
    if args.plda and not args.lda:
        raise VoxadaptError("--plda needs the LDA it was trained after: give --lda (Kaldi's transform.mat)")
    emb = Embeddings.from_scp(args.scp)
    enrolment = enrolment_side(emb, args.enroll_scp, args.enroll_map, args.num_utts)
    if args.backend:
        backend = Backend.load(Path(args.backend))
    else:
        backend = Backend(kf.read_vector(args.mean) if args.mean else emb.matrix.mean(0),
                          kf.read_matrix(args.lda) if args.lda else None,
                          Plda(*kf.read_plda(args.plda)) if args.plda else None)
    backend = with_cohort(backend, args.cohort_scp)  # e.g. x-vectors of the evaluation domain
    if args.plda_smoothing and backend.plda is not None:
        backend.plda = backend.plda.smoothed(args.plda_smoothing)
    scored = score_list(args.trials, emb, backend, [args.method], args.top_n, enrolment)
    write_scores(Path(args.out), scored.trials, scored.scores[args.method])
    metrics = scored.metrics.get(args.method)
    summary = f", EER {100 * metrics['eer']:.2f}%" if metrics else ""
    print(f"{args.out}: {len(scored.trials)} trials scored with {args.method}{summary}")
    return 0


if __name__ == "__main__":
    run_main(main)
