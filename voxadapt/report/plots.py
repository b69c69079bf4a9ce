"""Figures written as PNG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from voxadapt.fileio import atomic_path  # noqa: E402


def layer_weight_figure(weights: dict[str, np.ndarray], title: str):  # noqa: ANN201 - a matplotlib Figure
    """Bars of each softmax layer-weight vector (0 = transformer input, L = top layer)."""
    fig, ax = plt.subplots(figsize=(6, 3))
    n = len(next(iter(weights.values())))
    width = 0.8 / len(weights)
    for i, (name, w) in enumerate(weights.items()):
        ax.bar(np.arange(n) + i * width - 0.4 + width / 2, w, width, label=name)
    ax.axhline(1.0 / n, color="grey", lw=0.8, ls="--", label="uniform")
    ax.set_xlabel("hidden state (0: transformer input)")
    ax.set_ylabel("weight")
    ax.set_xticks(range(n))
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> None:  # noqa: ANN001
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def save_layer_weight_png(path: Path, weights: dict[str, np.ndarray], title: str) -> None:
    save_figure(layer_weight_figure(weights, title), path)


_DET_TICKS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4]


def det_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str):  # noqa: ANN201
    """DET curves on probit axes: {method: (p_fa, p_miss)}."""
    from scipy.stats import norm

    fig, ax = plt.subplots(figsize=(5, 5))
    lim = norm.ppf([_DET_TICKS[0], _DET_TICKS[-1] + 0.1])
    for name, (p_fa, p_miss) in curves.items():
        ax.plot(norm.ppf(np.clip(p_fa, 1e-5, 1 - 1e-5)), norm.ppf(np.clip(p_miss, 1e-5, 1 - 1e-5)), label=name)
    ticks = norm.ppf(_DET_TICKS)
    labels = [f"{100 * t:g}" for t in _DET_TICKS]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.plot(lim, lim, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("false alarm rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.set_title(title)
    ax.grid(True, lw=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def histogram_figure(scores: dict[str, tuple[np.ndarray, np.ndarray]], title: str):  # noqa: ANN201
    """Target / non-target score histograms, one panel per method: {method: (scores, labels)}."""
    fig, axes = plt.subplots(1, len(scores), figsize=(4 * len(scores), 3), squeeze=False)
    for ax, (name, (s, lab)) in zip(axes[0], scores.items()):
        bins = np.linspace(s.min(), s.max(), 60)
        ax.hist(s[~lab], bins, alpha=0.6, density=True, label="non-target")
        ax.hist(s[lab], bins, alpha=0.6, density=True, label="target")
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
