"""Multi-seed comparisons of configs on the same data (pyscripts/compare.py runs run.sh per
(config, seed)): EER / minDCF tabulated as mean and spread over seeds, with trainable
parameters and step time.

Each run gets a derived config exp/<name>_s<seed>: 'base: <config>' with its name and seed.
Runs that only add stage-4 phases can share the stage-3 model of another config and seed
(`share_stage3`), so a baseline and its adaptations start from the same network.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxadapt.config import load_config
from voxadapt.layout import ExpLayout


@dataclass(frozen=True)
class Run:
    config: Path
    seed: int
    name: str


def derived_config(run: Run, out_dir: Path) -> Path:
    path = out_dir / f"{run.name}.yaml"
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(f"base: {run.config.resolve()}\nname: {run.name}\nseed: {run.seed}\n")
    return path


def share_stage3(src: Path, dst: Path, phases: list[str]) -> None:
    """dst/<phase> -> src/<phase> for the stage-3 phases (identical configs: identical models)."""
    dst.mkdir(parents=True, exist_ok=True)
    for phase in phases:
        link = dst / phase
        if not link.exists():
            link.symlink_to(os.path.relpath(src / phase, dst))


def summarize(exp: Path, runs: list[Run], label: str, method: str, trial_list: str | None) -> dict:
    eers, dcfs, params, step_s = [], [], [], []
    for run in runs:
        layout = ExpLayout.of(exp, run.name)
        results = json.loads(layout.results_json.read_text())
        key = trial_list or next(iter(results))
        eers.append(100 * results[key][method]["eer"])
        dcfs.append(results[key][method]["min_dcf"]["0.01"])
        cfg = load_config(layout.config)
        last = (cfg.adapt.phases or cfg.train.phases)[-1].name
        summary = json.loads((layout.phase_dir(last) / "summary.json").read_text())
        params.append(summary["trainable_params"] / summary["total_params"])
        step_s.append(summary["seconds_per_step"])
    return {"label": label, "eer": eers, "min_dcf": dcfs, "trainable": float(np.mean(params)),
            "seconds_per_step": float(np.median(step_s)), "seeds": [r.seed for r in runs]}


def markdown(rows: list[dict], method: str, reference: str | None = None) -> str:
    ref = next((r for r in rows if r["label"] == reference), None)
    head = f"| system | EER % ({method}), mean ± sd | per seed | minDCF 0.01 | trainable share | s / step |"
    lines = [head + (" EER vs " + reference + " |" if ref else ""), "|" + "---|" * (6 + bool(ref))]
    for r in rows:
        eer, sd = np.mean(r["eer"]), np.std(r["eer"], ddof=1) if len(r["eer"]) > 1 else 0.0
        cells = [r["label"], f"{eer:.2f} ± {sd:.2f}", " / ".join(f"{e:.2f}" for e in r["eer"]),
                 f"{np.mean(r['min_dcf']):.3f}", f"{100 * r['trainable']:.1f}%", f"{r['seconds_per_step']:.2f}"]
        if ref:
            cells.append(f"{100 * (eer - np.mean(ref['eer'])) / np.mean(ref['eer']):+.1f}%")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
