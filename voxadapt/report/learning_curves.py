"""Learning curves of trainings, read back from their TensorBoard logs: validation EER, training
loss and training accuracy against the step, one line per experiment, with optional reference
EERs (e.g. MFCC statistics on the same validation list) as horizontal lines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxadapt.errors import VoxadaptError
from voxadapt.layout import ExpLayout


@dataclass
class Curves:
    label: str
    train_steps: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    valid_steps: np.ndarray  # the step at the end of each validated epoch
    valid_eer: np.ndarray  # %


def read_curves(exp_dir: Path, phase: str, label: str) -> Curves:
    """A phase's scalars from <exp>/tensorboard/<phase>/ (validation is logged per epoch; its step
    is the last training step logged before it)."""
    import logging

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # it notes every file it has read to the end

    logs = ExpLayout(exp_dir).tensorboard / phase
    if not logs.is_dir():
        raise VoxadaptError(f"{logs}: no TensorBoard log of phase '{phase}'; give an experiment that trained it")
    acc = EventAccumulator(str(logs), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for needed in ("train/loss", "train/accuracy", "valid/eer"):
        if needed not in tags:
            raise VoxadaptError(f"{logs}: no '{needed}' scalars yet; let the phase run an epoch")

    def series(tag: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        events = {e.step: e for e in acc.Scalars(tag)}  # a resumed run logs some steps again: the last counts
        steps = np.array(sorted(events))
        return steps, np.array([events[s].value for s in steps]), np.array([events[s].wall_time for s in steps])

    steps, loss, times = series("train/loss")
    _, accuracy, _ = series("train/accuracy")
    _, eer, valid_times = series("valid/eer")  # its step is the epoch; place it at the epoch's last step
    last_before = np.searchsorted(times, valid_times, side="right") - 1
    return Curves(label, steps, loss, accuracy, steps[np.maximum(last_before, 0)], eer * 100)


def running_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` values at each point (fewer at the start): per-batch loss and
    accuracy are too noisy to read one by one."""
    c = np.cumsum(np.concatenate([[0.0], x]))
    i = np.arange(1, len(x) + 1)
    return (c[i] - c[np.maximum(i - window, 0)]) / np.minimum(i, window)


def learning_curve_figure(curves: list[Curves], references: dict[str, float], window: int = 25):  # noqa: ANN201
    """Three panels (validation EER, training loss, training accuracy; the last two as running
    means over `window` logged steps). Returns the matplotlib Figure."""
    from voxadapt.report.plots import plt

    fig, (ax_eer, ax_loss, ax_acc) = plt.subplots(1, 3, figsize=(13, 3.6))
    for c in curves:
        line, = ax_eer.plot(c.valid_steps, c.valid_eer, marker="o", ms=3, label=c.label)
        ax_loss.plot(c.train_steps, running_mean(c.loss, window), color=line.get_color(), lw=1)
        ax_acc.plot(c.train_steps, running_mean(c.accuracy, window) * 100, color=line.get_color(), lw=1)
    for i, (name, value) in enumerate(references.items()):
        ax_eer.axhline(value, color="grey", lw=1, ls=("--", ":", "-.")[i % 3], label=name)
    ax_eer.set(xlabel="step", ylabel="validation EER (%)", title="validation EER")
    ax_loss.set(xlabel="step", ylabel="nats", title=f"training loss (AAM, with margin; mean of {window})")
    ax_acc.set(xlabel="step", ylabel="%", title=f"training accuracy (with margin; mean of {window})")
    ax_eer.legend(fontsize=7)
    fig.tight_layout()
    return fig
