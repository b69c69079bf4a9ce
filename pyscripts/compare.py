#!/usr/bin/env python3
"""Compare configs over seeds on the same data: run stages 3-7 for each (config, seed) and print
markdown tables (one per scoring method) of the EER on every scored list (clean and degraded) with
95 % speaker-bootstrap intervals, the paired difference from a reference system, minDCF,
trainable share and step time.

    python pyscripts/compare.py --configs conf/mhfa_tiny.yaml conf/adapters_tiny.yaml --seeds 1 2 3
    # stage-4-only variants sharing the baseline's stage-3 model:
    python pyscripts/compare.py --configs conf/mhfa_tiny.yaml conf/dropadapt_tiny.yaml --stage3-from mhfa_tiny
    # at the evaluation scale (data prepared by ./run.sh --config conf/eval_synthetic.yaml --data data_eval --stop_stage 2):
    python pyscripts/compare.py --overlay conf/eval_synthetic.yaml --data data_eval --exp exp/compare_eval ...
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
    parser.add_argument("--methods", nargs="+", default=["cosine", "asnorm"], help="one table per scoring method")
    parser.add_argument("--stage3-from", help="config name whose stage-3 model the others reuse (stage-4 variants)")
    parser.add_argument("--reference", help="label of the system the others are compared with")
    parser.add_argument("--overlay", type=Path, help="config whose data, loader and scoring sections every run takes "
                        "(conf/eval_synthetic.yaml: the evaluation scale)")
    parser.add_argument("--teacher", help="distillation teacher (model dir) of the configs that distil, instead of "
                        "their own (the teacher trained at the overlay's scale)")
    parser.add_argument("--mfcc-reference", action="store_true",
                        help="add the MFCC-statistics row (no training; computed once under --exp)")
    parser.add_argument("--nj", type=int, default=2, help="jobs for the MFCC statistics")
    args = parser.parse_args(argv)
    from voxadapt import mfcc_reference
    from voxadapt.config import load_config
    from voxadapt.layout import DataLayout, ExpLayout
    from voxadapt.report.comparison import Run, derived_config, load_system, markdown, overlay_sections, scored_lists, share_stage3

    exp, data = Path(args.exp).resolve(), Path(args.data).resolve()
    labels = args.labels or [load_config(c).name for c in args.configs]
    if len(labels) != len(args.configs):
        raise VoxadaptError(f"--labels: {len(labels)} given for {len(args.configs)} configs; give one per config")
    overlay = overlay_sections(args.overlay)
    runs = {}
    for config, label in zip(args.configs, labels):
        cfg = load_config(config)
        runs[label] = [Run(Path(config), s, f"{cfg.name}_s{s}") for s in args.seeds]
        own = overlay
        if args.teacher and cfg.model.distill.teacher:
            own = {**overlay, "model": {"distill": {"teacher": str(Path(args.teacher).resolve())}}}
        for run in runs[label]:
            cfg_file = derived_config(run, exp / "configs", own)
            if args.stage3_from and cfg.name != args.stage3_from:
                share_stage3(exp / f"{args.stage3_from}_s{run.seed}", exp / run.name, [p.name for p in cfg.train.phases])
            run_stages(cfg_file, data, exp, 3, 7)
    first_cfg = load_config(exp / "configs" / f"{runs[labels[0]][0].name}.yaml")
    lists = scored_lists(first_cfg, DataLayout(data))
    systems = [load_system(exp, [r.name for r in rs], label, lists, args.methods) for label, rs in runs.items()]
    if args.mfcc_reference:
        mfcc_reference.run(first_cfg, DataLayout(data), ExpLayout.of(exp, mfcc_reference.NAME), args.nj)
        systems.append(load_system(exp, [mfcc_reference.NAME], "MFCC statistics, no training", lists, ["cosine"],
                                   trained=False))
    tables = [f"### {m}\n\n" + markdown(systems, lists, m, args.reference) for m in args.methods]
    text = "\n".join(tables)
    (exp / f"table_{'_'.join(load_config(c).name for c in args.configs)}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    run_main(main)
