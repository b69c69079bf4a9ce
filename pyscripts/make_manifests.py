#!/usr/bin/env python3
"""Stage 1: lhotse manifests (recordings, supervisions, cuts) for every data dir of the config."""

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
    from voxadapt.stages import manifests

    cfg = config_from_args(args)
    manifests.run(cfg, *layouts_from_args(args, cfg))


if __name__ == "__main__":
    run_main(main)
