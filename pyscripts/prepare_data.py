#!/usr/bin/env python3
"""Stage 0: Kaldi data dirs and trial lists for the configured corpus (synthetic, voxceleb, kaldi)."""

from voxadapt.cli import add_config_args, config_from_args, make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    add_config_args(parser)
    parser.add_argument("--data", default="data", help="data root (default: data)")
    parser.add_argument("--nj", type=int, default=1, help="parallel processes")
    args = parser.parse_args(argv)
    from voxadapt.corpus.stage import prepare_data_stage

    return prepare_data_stage(config_from_args(args), args.data, args.nj)


if __name__ == "__main__":
    run_main(main)
