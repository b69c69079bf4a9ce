#!/usr/bin/env python3
"""Pre-train a small SSL speech model without speaker labels and save it with save_pretrained
(HuBERT-style masked prediction of MFCC k-means units, WavLM-style denoising). Resumable."""

import shlex
import sys

from voxadapt.pyscript import add_config_args, config_from_args, make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    add_config_args(parser)
    parser.add_argument("--work", default="exp/pretrain_tiny", help="corpus, targets and checkpoints")
    parser.add_argument("--nj", type=int, default=2, help="processes for rendering the corpus")
    args = parser.parse_args(argv)
    from pathlib import Path

    from voxadapt.pretrain.trainer import export, pretrain

    cfg = config_from_args(args)
    result = pretrain(cfg, Path(args.work), args.nj)
    export(cfg, result, Path(cfg.pretrain.out_dir), shlex.join(["python", sys.argv[0], *argv]))
    print(f"saved {cfg.pretrain.out_dir} ({result['steps']} steps)")
    return 0


if __name__ == "__main__":
    run_main(main)
