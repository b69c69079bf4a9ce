#!/usr/bin/env python3
"""Validate a Kaldi data dir: tables (sorted, unique, consistent) and its audio (see --audio)."""

from voxadapt.pyscript import make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    parser.add_argument("data_dir")
    parser.add_argument("--audio", choices=["auto", "decode", "header", "none"], default="auto",
                        help="decode every recording, or read headers and decode a sample, or check the tables "
                             "only; auto: decode up to 20,000 recordings, of them 2,000 pipes (default: %(default)s)")
    parser.add_argument("--sample", type=int, default=1000, help="recordings decoded in full by --audio header")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--min-duration", type=float, default=0.2)
    parser.add_argument("--trials", action="append", default=[], help="also check this trial list (repeatable)")
    parser.add_argument("--nj", type=int, default=1)
    args = parser.parse_args(argv)
    from voxadapt.data.trials import read_trials
    from voxadapt.data.validate import validate_data_dir

    d = validate_data_dir(args.data_dir, args.sample_rate, args.min_duration, args.audio, args.nj, args.sample)
    for trials in args.trials:
        read_trials(trials, known=d.utt2spk)
    print(f"{args.data_dir}: OK ({len(d.utt2spk)} utterances, {len(d.spk2utt)} speakers)")
    return 0


if __name__ == "__main__":
    run_main(main)
