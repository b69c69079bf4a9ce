"""run.sh's one entry into Python: `python -m voxadapt.stages STEP [--config F] [--set K=V ...] [options]`.

STEP is a stage (data, manifests, augment, train, adapt, backend, score, package: each calls that
stage's `run`), `paths` (the names and paths the shell needs, as shell assignments, asked once per
run: voxadapt.layout owns every path, the shell only passes them on) or `config` (the resolved
config as YAML, or one value with --get).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from voxadapt.pyscript import add_config_args, config_from_args, make_parser, run_main, shell_assignments

# The steps and the options each adds to --config/--set/--data/--exp.
STEPS: dict[str, str] = {
    "data": "stage 0: Kaldi data dirs and trial lists for the configured corpus",
    "manifests": "stage 1: lhotse manifests (recordings, supervisions, cuts) of every data dir",
    "augment": "stage 2: noise/music/babble/RIR resources (+ training audio as lhotse Shar shards)",
    "train": "stage 3: the config's train.phases (run under torchrun; resumes from the last checkpoint)",
    "adapt": "stage 4: the config's adapt.phases, then <exp>/<name>/model",
    "backend": "stage 6: mean, LDA, PLDA (Kaldi formats), AS-norm cohort, calibration",
    "score": "stage 7: every trial list of the test sets; RESULTS.md, results.json, DET plots",
    "package": "stage 8: <exp>/<name>/package (model, back-end, calibration, model.onnx)",
    "paths": "print the names and paths run.sh needs, as shell assignments",
    "config": "print the resolved config as YAML (or one value with --get)",
}


def add_step_args(step: str, parser: argparse.ArgumentParser) -> None:
    if step in ("data", "augment"):
        parser.add_argument("--nj", type=int, default=1, help="parallel processes")
    elif step == "backend":
        parser.add_argument("--binary", choices=["true", "false"], default="true",
                            help="false: mean.vec, lda.mat and plda in Kaldi's text forms (default: true)")
    elif step == "package":
        parser.add_argument("--out", type=Path, help="package dir (default: <exp>/<name>/package)")
        parser.add_argument("--adapters-only", action="store_true",
                            help="store adapters, LayerNorms and back-end only, pointing at the base model")
        parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX export")
    elif step == "config":
        parser.add_argument("--get", default="", help="dotted key to print, e.g. name or data.corpus")


def run_paths(cfg, data, exp) -> None:  # noqa: ANN001
    from voxadapt.layout import lock

    sets = cfg.data.sets
    print(shell_assignments({
        "corpus": cfg.data.corpus,
        "expdir": str(exp.root),
        "model_dir": str(exp.model),
        "log_dir": str(exp.log_dir),
        "data_lock": str(lock(data.root)),
        "exp_lock": str(lock(exp.root)),
        "all_sets": " ".join(sets.all),
        "backbone_source": cfg.model.backbone.source,
        "set_dir": {s: str(data.set_dir(s)) for s in sets.all},
        "xvector_dir": {s: str(exp.embeddings(s)) for s in sets.all},
    }))


def run_config(cfg, get: str) -> None:  # noqa: ANN001
    from voxadapt.config import dump_yaml, get_dotted

    if not get:
        print(dump_yaml(cfg), end="")
        return
    value = get_dotted(cfg, get)
    print(" ".join(map(str, value)) if isinstance(value, list) else value)  # lists: words for shell loops


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] not in STEPS:
        steps = "\n".join(f"  {name:<10} {what}" for name, what in STEPS.items())
        text = f"usage: python -m voxadapt.stages STEP [--config FILE] [--set KEY=VALUE] [options]\nSteps:\n{steps}"
        if argv and argv[0] in ("-h", "--help"):
            print(text)
            return 0
        parser = make_parser(__doc__)
        parser.prog = "python -m voxadapt.stages"
        parser.error(f"give a step first, one of {', '.join(STEPS)}" if not argv else f"unknown step '{argv[0]}'")
    step = argv[0]
    parser = make_parser(STEPS[step])
    parser.prog = f"python -m voxadapt.stages {step}"
    add_config_args(parser)
    parser.add_argument("--data", type=Path, default=Path("data"), help="data root (default: data)")
    parser.add_argument("--exp", type=Path, default=Path("exp"), help="experiment root (default: exp)")
    add_step_args(step, parser)
    args = parser.parse_args(argv[1:])
    from voxadapt.layout import DataLayout, ExpLayout

    cfg = config_from_args(args)
    data, exp = DataLayout(args.data), ExpLayout.of(args.exp, cfg.name)
    STAGE_CALLS[step](cfg, data, exp, args)
    return 0


def driver(name: str):  # noqa: ANN201 - a stage module, imported only when its step runs (torch is slow to load)
    import importlib

    return importlib.import_module(f"voxadapt.stages.{name}")


# Each driver gets what it reads: stages 0-2 the data root, 8 the experiment, the others both.
STAGE_CALLS: dict[str, Callable[..., None]] = {
    "data": lambda cfg, data, exp, a: driver("data").run(cfg, data, nj=a.nj),
    "manifests": lambda cfg, data, exp, a: driver("manifests").run(cfg, data),
    "augment": lambda cfg, data, exp, a: driver("augment").run(cfg, data, nj=a.nj),
    "train": lambda cfg, data, exp, a: driver("train").run(cfg, data, exp),
    "adapt": lambda cfg, data, exp, a: driver("adapt").run(cfg, data, exp),
    "backend": lambda cfg, data, exp, a: driver("backend").run(cfg, data, exp, binary=a.binary == "true"),
    "score": lambda cfg, data, exp, a: driver("score").run(cfg, data, exp),
    "package": lambda cfg, data, exp, a: driver("package").run(cfg, exp, out=a.out, adapters_only=a.adapters_only,
                                                               onnx=not a.no_onnx),
    "paths": lambda cfg, data, exp, a: run_paths(cfg, data, exp),
    "config": lambda cfg, data, exp, a: run_config(cfg, a.get),
}
if __name__ == "__main__":
    run_main(main)
