#!/usr/bin/env python3
"""Stages 3-4: train the configured phases (run under torchrun; resumes from the last checkpoint)."""

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
    parser.add_argument("--stage", choices=["train", "adapt"], default="train",
                        help="train: the config's train.phases (stage 3); adapt: adapt.phases (stage 4)")
    args = parser.parse_args(argv)
    from voxadapt.stages import adapt, train

    cfg = config_from_args(args)
    (train if args.stage == "train" else adapt).run(cfg, *layouts_from_args(args, cfg))


if __name__ == "__main__":
    run_main(main)
