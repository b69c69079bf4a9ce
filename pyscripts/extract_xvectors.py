#!/usr/bin/env python3
"""Stage 5, one job: x-vectors of part JOB of a split data dir -> OUT/xvector.JOB.{ark,scp}."""

from voxadapt.pyscript import add_config_args, config_from_args, make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    add_config_args(parser)
    parser.add_argument("--model", required=True, help="trained model dir (exp/<name>/model)")
    parser.add_argument("--split-dir", required=True, help="<data>/<set>/split<N>")
    parser.add_argument("--out", required=True, help="output dir (exp/<name>/embeddings/<set>)")
    parser.add_argument("--job", type=int, required=True, help="part number, 1-based (Kaldi's JOB)")
    parser.add_argument("--num-threads", type=int, default=0, help="torch threads (default: extract.num_threads)")
    args = parser.parse_args(argv)
    import os
    from pathlib import Path

    from voxadapt.stages.extract import run_job

    cfg = config_from_args(args)
    # Inside a Slurm job its own CPU allocation counts; locally, run.sh's share of the machine.
    threads = int(os.environ.get("SLURM_CPUS_PER_TASK", 0)) or args.num_threads
    if threads:
        cfg.extract.num_threads = threads
    run_job(cfg, Path(args.model), Path(args.split_dir), Path(args.out), args.job)
    return 0


if __name__ == "__main__":
    run_main(main)
