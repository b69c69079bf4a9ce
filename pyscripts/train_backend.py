#!/usr/bin/env python3
"""Stage 6: back-end from the training x-vectors (mean, LDA, PLDA in Kaldi formats, AS-norm
cohort, calibration). Standalone: --scp X --utt2spk U --out DIR trains the same back-end on any
Kaldi x-vectors (no calibration)."""

from voxadapt.pyscript import (
    add_config_args,
    add_layout_args,
    config_from_args,
    layouts_from_args,
    make_parser,
    run_main,
)


def main(argv):
    parser = make_parser(__doc__)
    add_config_args(parser)
    add_layout_args(parser)
    parser.add_argument("--scp", help="standalone: Kaldi xvector.scp of the training set")
    parser.add_argument("--utt2spk", help="standalone: utt2spk for --scp")
    parser.add_argument("--out", help="standalone: output dir")
    parser.add_argument("--binary", choices=["true", "false"], default="true",
                        help="false: mean.vec, lda.mat and plda in Kaldi's text forms (default: true)")
    args = parser.parse_args(argv)
    binary = args.binary == "true"
    cfg = config_from_args(args)
    if not args.scp:
        from voxadapt.stages import backend

        return backend.run(cfg, *layouts_from_args(args, cfg), binary=binary)
    if not (args.utt2spk and args.out):
        parser.error("--scp needs --utt2spk and --out")
    from pathlib import Path

    from voxadapt.backend.scoring import Embeddings
    from voxadapt.backend.training import train_backend
    from voxadapt.data.kaldi_dir import read_table

    utt2spk = {k: v.value for k, v in read_table(Path(args.utt2spk), check_order=False).items()}
    backend, history = train_backend(Embeddings.from_scp(args.scp), utt2spk, cfg.scoring)
    backend.save(Path(args.out), binary)
    print(f"{args.out}: mean.vec, lda.mat ({backend.lda.shape[0]} dims), plda, cohort.ark "
          f"(PLDA log-likelihood {history[0]:.2f} -> {history[-1]:.2f})")
    return 0


if __name__ == "__main__":
    run_main(main)
