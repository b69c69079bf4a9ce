#!/usr/bin/env python3
"""Stage 5, after the jobs: one sorted xvector.scp, completeness checks, speaker means
(spk_xvector.{ark,scp}, num_utts.ark). With --check: exit 0 if the set is already complete."""

from voxadapt.pyscript import add_config_args, config_from_args, make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    add_config_args(parser)
    parser.add_argument("--data", required=True, help="the data dir that was split")
    parser.add_argument("--model", required=True, help="trained model dir")
    parser.add_argument("--out", required=True, help="exp/<name>/embeddings/<set>")
    parser.add_argument("--nj", type=int, required=True)
    parser.add_argument("--check", action="store_true", help="only test whether the set is complete")
    args = parser.parse_args(argv)
    from pathlib import Path

    from voxadapt.stages.extract import run_merge

    return run_merge(config_from_args(args), Path(args.data), Path(args.model), Path(args.out), args.nj, args.check)


if __name__ == "__main__":
    run_main(main)
