#!/usr/bin/env python3
"""Learning curves of one or more experiments in one PNG: validation EER, training loss and
training accuracy against the step, from their TensorBoard logs (stage 3 writes them), with
reference EERs as horizontal lines (e.g. MFCC statistics on the same validation list).

    . ./path.sh; python local/learning_curves.py --exp exp/a exp/b --labels "6 epochs" "12 epochs" \
        --mfcc-reference data --out curves.png
"""

from pathlib import Path

from voxadapt.pyscript import make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    parser.add_argument("--exp", nargs="+", required=True, help="experiment dirs (exp/<name>)")
    parser.add_argument("--labels", nargs="*", help="a label per experiment (default: their names)")
    parser.add_argument("--phase", default="main", help="the training phase to plot")
    parser.add_argument("--reference", action="append", default=[], metavar="NAME=EER",
                        help="a horizontal line at EER %% (repeatable)")
    parser.add_argument("--mfcc-reference", metavar="DATA",
                        help="also a line at MFCC statistics' EER on the validation list of DATA (the data root "
                             "the experiments trained on; their config names the sets)")
    parser.add_argument("--nj", type=int, default=2, help="jobs for the MFCC statistics")
    parser.add_argument("--out", required=True, help="the PNG to write")
    args = parser.parse_args(argv)
    from voxadapt.errors import VoxadaptError
    from voxadapt.report.learning_curves import learning_curve_figure, read_curves
    from voxadapt.report.plots import save_figure

    labels = args.labels or [Path(e).name for e in args.exp]
    if len(labels) != len(args.exp):
        raise VoxadaptError(f"--labels gives {len(labels)} labels for {len(args.exp)} experiments; give one each")
    references = {}
    for item in args.reference:
        name, _, value = item.rpartition("=")
        try:
            references[name] = float(value)
        except ValueError:
            raise VoxadaptError(f"--reference {item!r}: give NAME=EER, e.g. 'MFCC statistics=7.67'") from None
        if not name:
            raise VoxadaptError(f"--reference {item!r}: give NAME=EER, e.g. 'MFCC statistics=7.67'")
    curves = [read_curves(Path(e), args.phase, label) for e, label in zip(args.exp, labels)]
    if args.mfcc_reference:
        from voxadapt import mfcc_reference
        from voxadapt.config import load_config
        from voxadapt.layout import DataLayout, ExpLayout

        cfg = load_config(ExpLayout(Path(args.exp[0])).config)
        references["MFCC statistics, no training"] = mfcc_reference.validation_eer(cfg, DataLayout(Path(args.mfcc_reference)),
                                                                                    args.nj)
    save_figure(learning_curve_figure(curves, references), Path(args.out))
    for name, value in references.items():
        print(f"{name}: {value:.2f} %")
    for c in curves:
        print(f"{c.label}: validation EER " + ", ".join(f"{e:.2f}" for e in c.valid_eer)
              + f" % at steps {', '.join(str(s) for s in c.valid_steps)}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_main(main)
