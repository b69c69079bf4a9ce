#!/usr/bin/env python3
"""Compare configs over seeds on the same data: run stages 3-7 for each (config, seed) and print a
markdown table of EER (mean ± sd), minDCF, trainable share and step time.

    python pyscripts/compare.py --configs conf/mhfa_tiny.yaml conf/adapters_tiny.yaml --seeds 1 2 3
    # stage-4-only variants sharing the baseline's stage-3 model:
    python pyscripts/compare.py --configs conf/mhfa_tiny.yaml conf/dropadapt_tiny.yaml --stage3-from mhfa_tiny
"""

import os
import subprocess
from pathlib import Path

from voxadapt.errors import VoxadaptError
from voxadapt.pyscript import make_parser, run_main

ROOT = Path(__file__).resolve().parent.parent


def run_stages(cfg_file: Path, data: Path, exp: Path, first: int, last: int) -> None:
    cmd = ["bash", str(ROOT / "run.sh"), "--config", str(cfg_file), "--stage", str(first), "--stop_stage", str(last),
           "--data", str(data), "--exp", str(exp)]
    proc = subprocess.run(cmd, cwd=ROOT, env=os.environ.copy())
    if proc.returncode != 0:
        raise VoxadaptError(f"{' '.join(cmd)} failed (exit {proc.returncode}); see its log above")


def main(argv):
    parser = make_parser(__doc__)
    parser.add_argument("--configs", nargs="+", required=True)
    parser.add_argument("--labels", nargs="*", help="row labels (default: config names)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--data", default="data")
    parser.add_argument("--exp", default="exp/compare")
    parser.add_argument("--method", default="cosine", help="scoring method for the table")
    parser.add_argument("--trials", help="trial list name (default: the first)")
    parser.add_argument("--stage3-from", help="config name whose stage-3 model the others reuse (stage-4 variants)")
    parser.add_argument("--reference", help="label to give relative EER changes against")
    args = parser.parse_args(argv)
    from voxadapt.config import load_config
    from voxadapt.report.comparison import Run, derived_config, markdown, share_stage3, summarize

    exp, data = Path(args.exp).resolve(), Path(args.data).resolve()
    labels = args.labels or [load_config(c).name for c in args.configs]
    rows = []
    for config, label in zip(args.configs, labels):
        cfg = load_config(config)
        runs = [Run(Path(config), s, f"{cfg.name}_s{s}") for s in args.seeds]
        for run in runs:
            cfg_file = derived_config(run, exp / "configs")
            first = 3
            if args.stage3_from and cfg.name != args.stage3_from:
                share_stage3(exp / f"{args.stage3_from}_s{run.seed}", exp / run.name, [p.name for p in cfg.train.phases])
            run_stages(cfg_file, data, exp, first, 7)
        rows.append(summarize(exp, runs, label, args.method, args.trials))
    table = markdown(rows, args.method, args.reference)
    (exp / f"table_{'_'.join(labels)}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    run_main(main)
