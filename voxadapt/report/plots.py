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
