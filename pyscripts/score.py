#!/usr/bin/env python3
"""Stage 7: score every trial list of the test sets with cosine / AS-norm / PLDA; calibrated
LLRs, EER and DCFs into exp/<name>/results.json and RESULTS.md, DET curves and histograms."""

from voxadapt.cli import add_config_args, config_from_args, make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    add_config_args(parser)
    parser.add_argument("--data", default="data")
    parser.add_argument("--exp", default="exp")
    args = parser.parse_args(argv)
    from voxadapt.backend.stage import score_stage

    return score_stage(config_from_args(args), args.data, args.exp)


if __name__ == "__main__":
    run_main(main)
