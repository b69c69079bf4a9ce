#!/usr/bin/env python3
"""Stage 5's Python steps (steps/extract_xvectors.sh runs them in this order):
  split  print the split dir of DATA_DIR and the jobs' log pattern, or nothing if OUT is complete;
         on a CPU, build the jobs' ONNX graph once in OUT/engine/ (exported, int8 checked on the set),
         unless every job is already done
  job    x-vectors of part JOB of the split -> OUT/xvector.JOB.{ark,scp}
  merge  one sorted OUT/xvector.scp, completeness checks, speaker means (spk_xvector.{ark,scp}, num_utts.ark)"""

from voxadapt.pyscript import add_config_args, config_from_args, make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    parser.add_argument("step", choices=["split", "job", "merge"])
    add_config_args(parser)
    parser.add_argument("--model", required=True, help="trained model dir (exp/<name>/model) or package")
    parser.add_argument("--out", required=True, help="x-vector dir (exp/<name>/embeddings/<set>)")
    parser.add_argument("--data-dir", help="split, merge: the data dir")
    parser.add_argument("--nj", type=int, help="split, merge: number of jobs")
    parser.add_argument("--split-dir", help="job: the split dir that 'split' printed")
    parser.add_argument("--job", type=int, help="job: part number, 1-based (Kaldi's JOB)")
    parser.add_argument("--num-threads", type=int, default=0, help="job: torch threads (default: extract.num_threads)")
    args = parser.parse_args(argv)
    needed = {"split": ("data_dir", "nj"), "job": ("split_dir", "job"), "merge": ("data_dir", "nj")}[args.step]
    for name in needed:
        if getattr(args, name) is None:
            parser.error(f"{args.step} needs --{name.replace('_', '-')}")
    import os
    from pathlib import Path

    from voxadapt.data.split import split_data_dir
    from voxadapt.layout import EmbeddingsLayout
    from voxadapt.stages.extract import jobs_done, prepare_engine, run_job, run_merge

    cfg = config_from_args(args)
    model, out = Path(args.model), Path(args.out)
    if args.step == "split":
        # The shell reads the plan from stdout: what libraries print there (the ONNX exporter dumps
        # its graph on a failure, from C++) goes to stderr instead.
        plan = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        if run_merge(cfg, Path(args.data_dir), model, out, args.nj, check_only=True) != 0:
            split = split_data_dir(args.data_dir, args.nj)
            if not jobs_done(cfg, model, split, out, args.nj):
                prepare_engine(cfg, model, Path(args.data_dir), out)
            print(split, EmbeddingsLayout(out).job_log("JOB"), sep="\n", file=plan, flush=True)
    elif args.step == "job":
        # Inside a Slurm job its own CPU allocation counts; locally, the caller's share of the machine.
        threads = int(os.environ.get("SLURM_CPUS_PER_TASK", 0)) or args.num_threads
        if threads:
            cfg.extract.num_threads = threads
        run_job(cfg, model, Path(args.split_dir), out, args.job)
    else:
        return run_merge(cfg, Path(args.data_dir), model, out, args.nj, check_only=False)
    return 0


if __name__ == "__main__":
    run_main(main)
