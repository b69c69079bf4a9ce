"""Stopping a training run cleanly: Ctrl-C or SIGTERM (Slurm preemption) finishes the current step,
saves a checkpoint and exits; DataLoader workers leave the decision to the main process."""

from __future__ import annotations

import logging
import signal

log = logging.getLogger(__name__)


class StopRequested:
    """SIGINT/SIGTERM (Ctrl-C, Slurm preemption): finish the step, save, exit."""

    def __init__(self) -> None:
        self.flag = False
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, _frame) -> None:  # noqa: ANN001
        if not self.flag:
            log.warning("got signal %d: saving a checkpoint after this step", signum)
        self.flag = True

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def ignore_sigint_in_workers(_worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
