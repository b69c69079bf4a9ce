#!/usr/bin/env python3
"""Stage 8: package exp/<name>/ (model, back-end, calibration) into one directory for the
`voxadapt` command and `voxadapt.load`, with an ONNX export of waveform -> embedding."""

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
    parser.add_argument("--out", help="package dir (default: exp/<name>/package)")
    parser.add_argument("--adapters-only", action="store_true",
                        help="store adapters, LayerNorms and pooling only, pointing at the base model")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX export")
    args = parser.parse_args(argv)
    from pathlib import Path

    from voxadapt.stages import package

    cfg = config_from_args(args)
    package.run(cfg, *layouts_from_args(args, cfg), out=Path(args.out) if args.out else None,
                adapters_only=args.adapters_only, onnx=not args.no_onnx)


if __name__ == "__main__":
    run_main(main)
