"""Multi-seed comparisons of configs on the same data (pyscripts/compare.py runs run.sh per
(config, seed)): each system's EER on every scored trial list (clean and degraded) as the mean
over its seeds with a 95 % speaker-bootstrap interval, its difference from a reference system with
a paired interval (a difference only where that interval excludes 0 and every seed agrees), minDCF, trainable
parameters and step time.

Each run gets a derived config exp/<name>_s<seed>: 'base: <config>' with its name and seed, and
an overlay's data, loader and scoring sections (the evaluation scale). Runs that only add stage-4 phases
can share the stage-3 model of another config and seed (`share_stage3`), so a baseline and its
adaptations start from the same network.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from voxadapt.backend.scoring import read_scores
from voxadapt.config import Config, load_config
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.data.trials import Trial, read_trials
from voxadapt.layout import DataLayout, ExpLayout, PhaseLayout, ScoresLayout, trial_lists
from voxadapt.metrics import eer
from voxadapt.report.bootstrap import Interval, bootstrap_draws

OVERLAY_SECTIONS = ("data", "loader", "scoring")  # what an overlay config (conf/eval_synthetic.yaml) sets for every run


@dataclass(frozen=True)
class Run:
    config: Path
    seed: int
    name: str


@dataclass(frozen=True)
class TrialList:
    """A scored list with what the bootstrap needs: labels and each side's speaker, in trial order."""

    name: str
    trials: list[Trial]
    labels: np.ndarray
    enroll_speaker: np.ndarray
    test_speaker: np.ndarray

    @classmethod
    def load(cls, name: str, path: Path, utt2spk: dict[str, str]) -> TrialList:
        trials = read_trials(path)
        return cls(name, trials, np.array([t.target for t in trials]), np.array([utt2spk[t.enroll] for t in trials]),
                   np.array([utt2spk[t.test] for t in trials]))


def scored_lists(cfg: Config, data: DataLayout) -> list[TrialList]:
    out = []
    for s in cfg.data.sets.scored:
        utt2spk = DataDir.load(data.set_dir(s)).utt2spk
        out += [TrialList.load(name, path, utt2spk) for name, path in trial_lists(data.set_dir(s)).items()]
    return out


@dataclass
class System:
    """One row: a config's runs (seeds), their scores per list and method, and their cost."""

    label: str
    scores: dict[tuple[str, str], list[np.ndarray]] = field(default_factory=dict)  # (list, method) -> per seed
    min_dcf: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    trainable: float | None = None  # share of the model's parameters that train
    seconds_per_step: float | None = None


def overlay_sections(path: Path | None) -> dict:
    """The OVERLAY_SECTIONS that the file itself sets (not its base's)."""
    if path is None:
        return {}
    load_config(path)  # a damaged or unknown-key overlay is a config error naming the file and line
    raw = yaml.safe_load(path.read_text())
    return {k: raw[k] for k in OVERLAY_SECTIONS if k in raw}


def derived_config(run: Run, out_dir: Path, overlay: dict | None = None) -> Path:
    path = out_dir / f"{run.name}.yaml"
    out_dir.mkdir(parents=True, exist_ok=True)
    text = f"base: {run.config.resolve()}\nname: {run.name}\nseed: {run.seed}\n"
    path.write_text(text + (yaml.safe_dump(overlay, sort_keys=False) if overlay else ""))
    return path


def share_stage3(src: Path, dst: Path, phases: list[str]) -> None:
    """dst/<phase> -> src/<phase> for the stage-3 phases (identical configs: identical models)."""
    dst.mkdir(parents=True, exist_ok=True)
    for phase in phases:
        link = dst / phase
        if not link.exists():
            link.symlink_to(os.path.relpath(src / phase, dst))


def load_system(exp: Path, names: list[str], label: str, lists: list[TrialList], methods: list[str],
                trained: bool = True) -> System:
    """A system from its runs' (seeds') stage-7 outputs (exp/<name>/scores/<list>/<method>.score)."""
    system = System(label)
    params, step_s = [], []
    for name in names:
        layout = ExpLayout.of(exp, name)
        results = json.loads(layout.results_json.read_text())
        for tl in lists:
            for m in methods:
                system.scores.setdefault((tl.name, m), []).append(read_scores(ScoresLayout(layout.scores(tl.name)).scores(m),
                                                                              tl.trials))
                system.min_dcf.setdefault((tl.name, m), []).append(results[tl.name][m]["min_dcf"]["0.01"])
        if trained:
            cfg = load_config(layout.config)
            last = (cfg.adapt.phases or cfg.train.phases)[-1].name
            summary = json.loads(PhaseLayout(layout.phase_dir(last)).summary.read_text())
            params.append(summary["trainable_params"] / summary["total_params"])
            step_s.append(summary["seconds_per_step"])
    if trained:
        system.trainable, system.seconds_per_step = float(np.mean(params)), float(np.median(step_s))
    return system


def markdown(systems: list[System], lists: list[TrialList], method: str, reference: str | None = None) -> str:
    """One table for `method`: rows without scores for it (the MFCC reference in an AS-norm table)
    are left out. Each system is bootstrapped once per list; intervals and paired differences come
    from the same draws. A difference is marked only when its paired interval excludes 0 and every
    seed's own difference has the same sign: the speaker bootstrap of the seed mean does not see the
    seed spread, which at this scale can be as large as the difference."""
    rows = [s for s in systems if (lists[0].name, method) in s.scores]
    ref = next((s for s in rows if s.label == reference), None)
    draws = {(s.label, tl.name): bootstrap_draws("eer", s.scores[(tl.name, method)], tl.labels, tl.enroll_speaker,
                                                 tl.test_speaker) for s in rows for tl in lists}
    seed_eers = {(s.label, tl.name): [eer(r, tl.labels)[0] for r in s.scores[(tl.name, method)]]
                 for s in rows for tl in lists}
    head = ["system"]
    for tl in lists:
        head += [f"{tl.name}: EER % (95 % interval)", "per seed"]
    head += [f"minDCF 0.01 ({lists[0].name})", "trainable share", "s / step"]
    if ref:
        head += [f"{tl.name}: EER vs {reference}, points (95 % paired interval)" for tl in lists]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in rows:
        cells = [s.label]
        for tl in lists:
            ci = draws[(s.label, tl.name)].interval()
            cells += [f"{100 * ci.value:.2f} ({100 * ci.low:.2f}-{100 * ci.high:.2f})",
                      " / ".join(f"{100 * e:.2f}" for e in seed_eers[(s.label, tl.name)])]
        cells += [f"{np.mean(s.min_dcf[(lists[0].name, method)]):.3f}",
                  "-" if s.trainable is None else f"{100 * s.trainable:.1f}%",
                  "-" if s.seconds_per_step is None else f"{s.seconds_per_step:.2f}"]
        if ref:
            for tl in lists:
                if s is ref:
                    cells.append("-")
                    continue
                d = draws[(s.label, tl.name)].minus(draws[(ref.label, tl.name)])
                seeds = per_seed_differences(seed_eers[(s.label, tl.name)], seed_eers[(ref.label, tl.name)])
                cells.append(f"{100 * d.value:+.2f} ({100 * d.low:+.2f} to {100 * d.high:+.2f}){verdict(d, seeds)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def per_seed_differences(system: list[float], reference: list[float]) -> list[float]:
    """Seed k against the reference's seed k (stage-4 variants share seed k's stage-3 model); a
    system with another number of runs (the MFCC reference) against the reference's seed mean."""
    if len(system) == len(reference):
        return [a - b for a, b in zip(system, reference)]
    return [a - float(np.mean(reference)) for a in system]


def verdict(d: Interval, seed_differences: list[float]) -> str:
    """The mark after a paired difference: none when its interval holds 0."""
    if not d.excludes_zero:
        return ""
    sign = -1 if d.high < 0 else 1
    if all(np.sign(x) == sign for x in seed_differences):
        return " **better**" if sign < 0 else " **worse**"
    return " (seeds disagree)"
