#!/usr/bin/env python3
"""The Python steps of local/evaluate.sh: 'paths' prints, as shell assignments, what the shell
needs of an experiment or package and of the evaluation dir; 'prepare' validates and copies the data
dir and trial list; 'score' scores with the model's back-end and prints the results table."""

from voxadapt.pyscript import make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    parser.add_argument("step", choices=["paths", "prepare", "score"])
    parser.add_argument("--model", required=True, help="exp/<name> or a package directory")
    parser.add_argument("--data-dir", help="prepare: your Kaldi data dir")
    parser.add_argument("--trials", help="prepare: its trial list (Kaldi or VoxCeleb format)")
    parser.add_argument("--eval-dir", help="the evaluation directory (data/, embeddings/, scores/; paths: default "
                        "<experiment>/eval/<name>, or <package>_eval/<name>)")
    parser.add_argument("--name", default="eval", help="the trial list's name in the results and the default output dir")
    parser.add_argument("--cohort-scp", default="", help="score: AS-norm cohort x-vectors instead of the model's")
    parser.add_argument("--nj", type=int, default=1, help="prepare: processes decoding the audio")
    args = parser.parse_args(argv)
    from pathlib import Path

    from voxadapt.layout import EvalLayout, ModelSource, lock
    from voxadapt.pyscript import shell_assignments
    from voxadapt.stages.evaluate import prepare_eval_data, score_eval

    source = ModelSource.find(args.model)
    out = EvalLayout(Path(args.eval_dir) if args.eval_dir else source.eval_dir(args.name))
    if args.step == "paths":
        print(shell_assignments({"model_dir": str(source.model), "config": str(source.config), "out": str(out.root),
                                 "out_lock": str(lock(out.root)), "out_data": str(out.data_dir),
                                 "out_xvectors": str(out.embeddings)}))
    elif args.step == "prepare":
        prepare_eval_data(Path(args.data_dir), Path(args.trials), out.data_dir, source, args.nj)
    else:
        table = score_eval(source, out, args.name, args.cohort_scp)
        print(f"\nResults of {args.model} on {args.name} ({out.results_md}):\n\n{table}")
    return 0


if __name__ == "__main__":
    run_main(main)
