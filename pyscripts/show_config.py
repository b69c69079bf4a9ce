#!/usr/bin/env python3
"""Print a value of the resolved config (for run.sh), or the whole resolved config as YAML."""

from voxadapt.cli import add_config_args, config_from_args, make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    add_config_args(parser)
    parser.add_argument("--get", default="", help="dotted key to print, e.g. name or data.corpus")
    args = parser.parse_args(argv)
    from voxadapt.config import dump_yaml, get_dotted

    cfg = config_from_args(args)
    print(get_dotted(cfg, args.get) if args.get else dump_yaml(cfg), end="\n" if args.get else "")
    return 0


if __name__ == "__main__":
    run_main(main)
