#!/usr/bin/env python3
"""Split a data dir into N parts balanced by duration: <data>/split<N>/<1..N>/ (Kaldi's layout)."""

from voxadapt.pyscript import make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    parser.add_argument("data_dir")
    parser.add_argument("nj", type=int)
    args = parser.parse_args(argv)
    from voxadapt.data.split import split_data_dir

    print(split_data_dir(args.data_dir, args.nj))
    return 0


if __name__ == "__main__":
    run_main(main)
