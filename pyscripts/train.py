#!/usr/bin/env python3
"""Stages 3-4: train the configured phases (run under torchrun; resumes from the last checkpoint)."""

from voxadapt.cli import add_config_args, config_from_args, make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    add_config_args(parser)
    parser.add_argument("--data", default="data", help="data root (default: data)")
    parser.add_argument("--exp", default="exp", help="experiment root (default: exp)")
    parser.add_argument("--stage", choices=["train", "adapt"], default="train",
                        help="train: the config's train.phases (stage 3); adapt: adapt.phases (stage 4)")
    args = parser.parse_args(argv)
    from voxadapt.train.stage import adapt_stage, train_stage

    cfg = config_from_args(args)
    return (train_stage if args.stage == "train" else adapt_stage)(cfg, args.data, args.exp)


if __name__ == "__main__":
    run_main(main)
