#!/usr/bin/env python3
"""Sort a Kaldi data dir and drop malformed, duplicate and inconsistent entries.

Prints one line per reason; refuses (changing nothing) when more than --allow-drop percent of the
utterances would be dropped. Originals and the full list of dropped entries go to a new
<data-dir>/.backup/<n>/.
"""

from voxadapt.pyscript import make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    parser.add_argument("data_dir")
    parser.add_argument("--allow-drop", type=float, default=10.0, metavar="PERCENT",
                        help="the largest share of utterances fixing may drop (default: 10)")
    args = parser.parse_args(argv)
    from voxadapt.data.validate import fix_data_dir

    report = fix_data_dir(args.data_dir, args.allow_drop)
    for line in report.summary():
        print(f"{args.data_dir}: {line}")
    print(f"{args.data_dir}: fixed; {report.utterances_after} of {report.utterances_before} utterances kept; "
          f"originals and the dropped list in {report.backup}")
    return 0


if __name__ == "__main__":
    run_main(main)
