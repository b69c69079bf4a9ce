#!/usr/bin/env python3
"""Stage 0: Kaldi data dirs and trial lists for the configured corpus (synthetic, voxceleb, kaldi)."""

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
    parser.add_argument("--nj", type=int, default=1, help="parallel processes")
    args = parser.parse_args(argv)
    from voxadapt.stages import data

    cfg = config_from_args(args)
    data.run(cfg, *layouts_from_args(args, cfg), nj=args.nj)


if __name__ == "__main__":
    run_main(main)
