#!/usr/bin/env python3
"""torchrun with the same arguments, but a failed worker ends in one line instead of torchrun's
traceback (each worker has already printed its own 'ERROR: ...' line), and a stop signal leaves
the workers time to save their checkpoint.

Exit codes: 0 done; 130 interrupted (Ctrl-C, SIGTERM, SIGUSR1; the workers save a checkpoint
first): run the same command to resume; 1 a worker failed."""

import os
import signal
import sys

INTERRUPTED = 130


def main() -> None:
    # SIGUSR1 (Slurm's warning before the time limit) asks the workers to save and stop. torchrun
    # passes it on to them like SIGTERM (each worker is in its own process group, out of reach of
    # a signal to torchrun's), then waits for them. Ignored until torchrun handles it, which would
    # die of it otherwise; its workers start with the default action (a trainer ends at once
    # outside a training phase, handles it inside one).
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    os.environ.setdefault("PET_SIGNALS_TO_HANDLE", "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1")
    # On a signal torchrun kills its workers after this many seconds (default 30): too short to
    # write a large checkpoint to a network file system.
    os.environ.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "300")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    try:
        torchrun_main(sys.argv[1:])
    except ChildFailedError as err:
        codes = {f.exitcode for f in err.failures.values()}
        # Ranks that stop on a signal leave together, once the checkpoint is written; others may
        # then die of torchrun's clean-up.
        if INTERRUPTED in codes:
            print("ERROR: training interrupted; run the same command to resume from the last checkpoint", file=sys.stderr)
            sys.exit(INTERRUPTED)
        ranks = ", ".join(str(r) for r in sorted(err.failures)) or "?"
        print(f"ERROR: training process(es) {ranks} failed (exit code {', '.join(map(str, sorted(codes)))}); "
              "see their messages above", file=sys.stderr)
        sys.exit(1)
    except SignalException as err:  # torchrun itself got the signal; its workers have stopped
        print(f"ERROR: training interrupted ({err.sigval.name}); run the same command to resume from the last checkpoint",
              file=sys.stderr)
        sys.exit(INTERRUPTED)


if __name__ == "__main__":
    main()
