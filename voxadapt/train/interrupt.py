"""Stopping a training run cleanly: Ctrl-C, SIGTERM (scancel, Slurm's time limit, preemption) and
SIGUSR1 (the warning Slurm sends before the time limit, sbatch --signal=USR1@N) all finish the
current step, save a checkpoint and exit. Slurm signals every process of the step, DataLoader
workers included: they ignore these signals and leave the decision to the main process."""

from __future__ import annotations

import logging
import signal

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class StopRequested:
    """A stop signal sets `flag`; the training loop saves and stops after the step."""

    def __init__(self) -> None:
        self.flag = False
        self._old = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}

    def _handle(self, signum, _frame) -> None:  # noqa: ANN001
        if not self.flag:
            log.warning("got signal %s: saving a checkpoint after this step", signal.Signals(signum).name)
        self.flag = True

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def ignore_stop_signals_in_workers(_worker_id: int) -> None:
    """DataLoader worker_init_fn: the stop signals ignored. Torch's workers die on a SIGTERM that
    does not come from their parent, which would fail the step before the main process can save;
    the main process ends them when it is done."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
