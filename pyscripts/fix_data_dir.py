#!/usr/bin/env python3
"""Sort a Kaldi data dir and drop malformed, duplicate and inconsistent entries, and with
--drop-bad-audio the recordings validation refuses (unreadable, another sample rate, not mono, too
short, silent) with their utterances.

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
    parser.add_argument("--drop-bad-audio", action="store_true",
                        help="decode every recording and drop those with audio faults, and their utterances")
    parser.add_argument("--sample-rate", type=int, default=16000, help="with --drop-bad-audio (default: 16000)")
    parser.add_argument("--min-duration", type=float, default=0.2, help="with --drop-bad-audio (default: 0.2)")
    parser.add_argument("--nj", type=int, default=1, help="parallel processes decoding the audio (default: 1)")
    args = parser.parse_args(argv)
    from voxadapt.data.validate import fix_data_dir

    report = fix_data_dir(args.data_dir, args.allow_drop, args.drop_bad_audio, args.sample_rate, args.min_duration,
                          args.nj)
    for line in report.summary():
        print(f"{args.data_dir}: {line}")
    audio = "" if report.audio_checked else " (audio not checked: --drop-bad-audio true drops recordings with faults)"
    print(f"{args.data_dir}: fixed; {report.utterances_after} of {report.utterances_before} utterances kept{audio}; "
          f"originals and the dropped list in {report.backup}")
    return 0


if __name__ == "__main__":
    run_main(main)
