#!/usr/bin/env python3
"""Sort a Kaldi data dir and drop malformed, duplicate and inconsistent entries (originals in .backup/)."""

from voxadapt.cli import make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    parser.add_argument("data_dir")
    args = parser.parse_args(argv)
    from voxadapt.data.validate import fix_data_dir

    report = fix_data_dir(args.data_dir)
    for line in report:
        print(line)
    print(f"{args.data_dir}: fixed, {len(report)} entr{'y' if len(report) == 1 else 'ies'} dropped")
    return 0


if __name__ == "__main__":
    run_main(main)
