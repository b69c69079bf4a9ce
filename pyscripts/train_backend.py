#!/usr/bin/env python3
"""The back-end of stage 6 (mean, LDA, PLDA in Kaldi formats, AS-norm cohort) trained on any Kaldi
x-vectors, e.g. Kaldi's own: --scp X --utt2spk U --out DIR. The scoring settings (LDA dimension,
PLDA iterations, cohort size) come from --config/--set; no calibration (it needs a trial list)."""

from voxadapt.pyscript import add_config_args, config_from_args, make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    add_config_args(parser)
    parser.add_argument("--scp", required=True, help="Kaldi xvector.scp of the training set")
    parser.add_argument("--utt2spk", required=True, help="utt2spk for --scp")
    parser.add_argument("--out", required=True, help="output dir")
    parser.add_argument("--binary", choices=["true", "false"], default="true",
                        help="false: mean.vec, lda.mat and plda in Kaldi's text forms (default: true)")
    args = parser.parse_args(argv)
    from pathlib import Path

    from voxadapt.backend.scoring import Embeddings
    from voxadapt.backend.training import train_backend
    from voxadapt.data.kaldi_dir import read_table

    cfg = config_from_args(args)
    utt2spk = {k: v.value for k, v in read_table(Path(args.utt2spk), check_order=False).items()}
    backend, history = train_backend(Embeddings.from_scp(args.scp), utt2spk, cfg.scoring)
    backend.save(Path(args.out), args.binary == "true")
    print(f"{args.out}: mean.vec, lda.mat ({backend.lda.shape[0]} dims), plda, cohort.ark "
          f"(PLDA log-likelihood {history[0]:.2f} -> {history[-1]:.2f})")
    return 0


if __name__ == "__main__":
    run_main(main)
