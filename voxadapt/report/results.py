"""What a scored trial list leaves: its directory (scores, LLRs, plots), and results.json and the
RESULTS.md table (EER and DCFs per trial list and scoring method)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from voxadapt.backend.scoring import write_scores
from voxadapt.backend.trial_list import ScoredList
from voxadapt.data.trials import Trial
from voxadapt.fileio import atomic_dir, atomic_path
from voxadapt.layout import ScoresLayout
from voxadapt.metrics import actual_dcf, cllr, eer, min_dcf
from voxadapt.report.bootstrap import metric_interval


def evaluate(scores: np.ndarray, labels: np.ndarray, p_targets: list[float], llrs: np.ndarray | None,
             speakers: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Metrics of one scored list; `speakers` (of each trial's two sides) adds the EER's 95 %
    speaker-bootstrap interval."""
    out = {"eer": eer(scores, labels)[0], "min_dcf": {str(p): min_dcf(scores, labels, p)[0] for p in p_targets},
           "trials": int(len(labels)), "targets": int(labels.sum())}
    if speakers is not None:
        ci = metric_interval("eer", [scores], labels, *speakers)
        out["eer_ci"] = [ci.low, ci.high]
        out["speakers"] = int(len(np.unique(np.concatenate(speakers))))
    if llrs is not None:
        out["act_dcf"] = {str(p): actual_dcf(llrs, labels, p) for p in p_targets}
        out["cllr"] = cllr(llrs, labels)
        # What the Bayes decisions do: shares of target and non-target trials accepted, at each
        # prior and at even odds (voxadapt verify's default).
        out["accepted"] = {}
        for p in [*p_targets, 0.5]:
            accept = llrs >= np.log((1 - p) / p)
            out["accepted"][str(p)] = {"targets": float(accept[labels].mean()),
                                       "nontargets": float(accept[~labels].mean())}
    return out


def condition_groups(trials: list[Trial], condition_of: dict[str, str]) -> dict[str, np.ndarray]:
    """Masks of a degraded list's trials by condition: each kind (room, noise, telephone, codec:
    utt2condition's word before ':') for trials whose two utterances both went through it, and
    'mixed' for two different kinds. A model enrolled through enroll.map has no condition: its
    trials are in no group."""
    def kind(utt: str) -> str | None:
        return condition_of[utt].split(":")[0] if utt in condition_of else None

    pairs = [(kind(t.enroll), kind(t.test)) for t in trials]
    groups = {k: np.array([a == b == k for a, b in pairs]) for k in sorted({a for a, _ in pairs} - {None})}
    groups["mixed"] = np.array([a is not None and b is not None and a != b for a, b in pairs])
    return {k: mask for k, mask in groups.items() if mask.any()}


def evaluate_groups(scores: np.ndarray, labels: np.ndarray, groups: dict[str, np.ndarray],
                    speakers: tuple[np.ndarray, np.ndarray] | None) -> dict[str, dict]:
    """EER (with its interval when `speakers` are given) of each group of trials that has both kinds."""
    out = {}
    for name, mask in groups.items():
        if labels[mask].any() and not labels[mask].all():
            sub = (speakers[0][mask], speakers[1][mask]) if speakers is not None else None
            out[name] = evaluate(scores[mask], labels[mask], [], None, sub)
    return out


def condition_table(results: dict[str, dict[str, dict]]) -> str:
    """EER by condition of the lists that have one (degraded sets), one column per method; '' if none."""
    lines = []
    for trials, methods in results.items():
        groups = next(iter(methods.values()), {}).get("by_condition", {})
        if not lines and groups:
            lines = ["| trial list | condition | trials | targets | " + " | ".join(f"{m} EER (%) (95 % interval)" for m in methods) + " |",
                     "|" + "---|" * (4 + len(methods))]
        for group, r in groups.items():
            cells = []
            for m in methods.values():
                g = m["by_condition"][group]
                ci = f" ({100 * g['eer_ci'][0]:.2f}-{100 * g['eer_ci'][1]:.2f})" if "eer_ci" in g else ""
                cells.append(f"{100 * g['eer']:.2f}{ci}")
            lines.append(f"| {trials} | {group} | {r['trials']:,} | {r['targets']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" if lines else ""


def results_table(results: dict[str, dict[str, dict]], p_targets: list[float]) -> str:
    """RESULTS.md's table (and the degraded lists' by condition, when there are any)."""
    ps = [str(p) for p in p_targets]
    head = (["trial list", "method", "EER (%) (95 % interval)"] + [f"minDCF {p}" for p in ps] + [f"actDCF {p}" for p in ps]
            + ["Cllr", "accepted at p 0.5: targets / non-targets", "trials"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for trials, methods in results.items():
        for method, r in methods.items():
            act = [f"{r['act_dcf'][p]:.3f}" if "act_dcf" in r else "-" for p in ps]
            even = r.get("accepted", {}).get("0.5")
            accepted = f"{100 * even['targets']:.1f} % / {100 * even['nontargets']:.1f} %" if even else "-"
            ci = f" ({100 * r['eer_ci'][0]:.2f}-{100 * r['eer_ci'][1]:.2f})" if "eer_ci" in r else ""
            cells = [trials, method, f"{100 * r['eer']:.2f}{ci}", *[f"{r['min_dcf'][p]:.3f}" for p in ps], *act,
                     f"{r['cllr']:.3f}" if "cllr" in r else "-", accepted, f"{r['trials']:,}"]
            lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    by_condition = condition_table(results)
    if by_condition:
        table += ("\nBy condition (trials whose two utterances went through the same condition of the degraded "
                  "copy; mixed: two different ones):\n\n" + by_condition)
    return table


def write_results(results_json: Path, results_md: Path, name: str, results: dict, p_targets: list[float]) -> str:
    """results.json and RESULTS.md; returns RESULTS.md's tables."""
    table = results_table(results, p_targets)
    with atomic_path(results_json) as tmp:
        tmp.write_text(json.dumps(results, indent=1) + "\n")
    with atomic_path(results_md) as tmp:
        tmp.write_text(f"# {name}\n\nEER and DCFs (C_miss = C_fa = 1) per trial list; actDCF uses the calibrated "
                       f"log-likelihood ratios at the Bayes threshold; Cllr (bits) measures those LLRs at every prior. The EER's "
                       f"interval is a bootstrap over the list's speakers (report/bootstrap.py).\n\n{table}")
    return table


def write_list_dir(out_dir: Path, title: str, scored: ScoredList) -> None:
    """One scored list's directory (scores, calibrated LLRs, DET and histogram plots), written whole:
    a kill leaves no half-scored list."""
    from voxadapt.metrics import roc
    from voxadapt.report.plots import det_figure, histogram_figure, save_figure

    with atomic_dir(out_dir) as out:
        curves = {}
        for m, scores in scored.scores.items():
            write_scores(ScoresLayout(out).scores(m), scored.trials, scores)
            llr = scored.llrs[m]
            if llr is not None:
                write_scores(ScoresLayout(out).llr(m), scored.trials, llr)
            r = roc(scores, scored.labels)
            curves[f"{m} (EER {100 * scored.metrics[m]['eer']:.2f}%)"] = (r.p_fa, r.p_miss)
        save_figure(det_figure(curves, title), ScoresLayout(out).det_png)
        save_figure(histogram_figure({m: (s, scored.labels) for m, s in scored.scores.items()}, title), ScoresLayout(out).histogram_png)
