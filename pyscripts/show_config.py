#!/usr/bin/env python3
"""Print a value of the resolved config (for run.sh), or the whole resolved config as YAML."""

from voxadapt.pyscript import add_config_args, config_from_args, make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    add_config_args(parser)
    parser.add_argument("--get", default="", help="dotted key to print, e.g. name or data.corpus")
    args = parser.parse_args(argv)
    from voxadapt.config import dump_yaml, get_dotted

    cfg = config_from_args(args)
    if not args.get:
        print(dump_yaml(cfg), end="")
        return 0
    value = get_dotted(cfg, args.get)
    print(" ".join(map(str, value)) if isinstance(value, list) else value)  # lists: words for shell loops
    return 0


if __name__ == "__main__":
    run_main(main)
