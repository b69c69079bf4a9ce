#!/usr/bin/env python3
"""Stage 7: score every trial list of the test sets with cosine / AS-norm / PLDA; calibrated
LLRs, EER and DCFs into exp/<name>/results.json and RESULTS.md, DET curves and histograms."""

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
    args = parser.parse_args(argv)
    from voxadapt.stages import score

    cfg = config_from_args(args)
    score.run(cfg, *layouts_from_args(args, cfg))


if __name__ == "__main__":
    run_main(main)
