#!/usr/bin/env python3
"""Stage 2: noise/music/babble/RIR resource manifests and speed-perturbed training cuts."""

from voxadapt.cli import add_config_args, config_from_args, make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    add_config_args(parser)
    parser.add_argument("--data", default="data", help="data root (default: data)")
    args = parser.parse_args(argv)
    from voxadapt.augment.resources import augment_stage

    return augment_stage(config_from_args(args), args.data)


if __name__ == "__main__":
    run_main(main)
