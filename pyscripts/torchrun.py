#!/usr/bin/env python3
"""torchrun with the same arguments, but a failed worker ends in one line instead of torchrun's
traceback (each worker has already printed its own 'ERROR: ...' line)."""

import sys


def main() -> None:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    try:
        torchrun_main(sys.argv[1:])
    except ChildFailedError as err:
        ranks = ", ".join(str(r) for r in sorted(err.failures)) or "?"
        codes = {f.exitcode for f in err.failures.values()}
        print(f"ERROR: training process(es) {ranks} failed (exit code {', '.join(map(str, sorted(codes)))}); "
              "see their messages above", file=sys.stderr)
        sys.exit(130 if codes == {130} else 1)


if __name__ == "__main__":
    main()
