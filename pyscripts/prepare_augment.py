#!/usr/bin/env python3
"""Stage 2: noise/music/babble/RIR resource manifests, speed-perturbed training cuts, and (with
loader.shards) the training audio as lhotse Shar shards."""

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
    parser.add_argument("--nj", type=int, default=1, help="processes writing shards")
    args = parser.parse_args(argv)
    from voxadapt.stages import augment

    cfg = config_from_args(args)
    augment.run(cfg, *layouts_from_args(args, cfg), nj=args.nj)


if __name__ == "__main__":
    run_main(main)
