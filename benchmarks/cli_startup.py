#!/usr/bin/env python3
"""What a `voxadapt` call costs before it does any work, as a user runs it (a new process each time):

    voxadapt --help
    voxadapt embed exp/nope a.wav          a mistyped package path: the error a user waits for
    voxadapt embed PACKAGE a.wav           start-up, model load and one 3 s file

from a baseline revision (`git archive`, default: main) and from this tree, alternating, each
`--repeats` times: the median wall time and the range. The commands take the package directory
itself, which both revisions read.

    python benchmarks/cli_startup.py --package exp/mhfa_tiny/package [--baseline main] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def seconds(source: Path, args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1"}  # the revision's package
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "voxadapt", *args], env=env, cwd=source, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--package", required=True, help="a packaged model directory (exp/<name>/package)")
    p.add_argument("--baseline", default="main", help="git revision to compare with (default: main)")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    import numpy as np
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "baseline"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "voxadapt"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        wav = Path(tmp) / "a.wav"
        sf.write(wav, np.random.default_rng(0).normal(0, 0.1, 48000).astype(np.float32), 16000, subtype="PCM_16")
        package = str(Path(args.package).resolve())
        commands = {"voxadapt --help": ["--help"], "voxadapt embed exp/nope a.wav": ["embed", str(Path(tmp) / "nope"), str(wav)],
                    "voxadapt embed PACKAGE a.wav (3 s)": ["embed", package, str(wav)]}
        print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
              f"{platform.python_version()}; baseline {args.baseline}; {args.repeats} runs each, alternating\n")
        print("| command | baseline s (median, range) | this tree s (median, range) | this tree / baseline |")
        print("|---|---|---|---|")
        for name, cmd in commands.items():
            runs: dict[str, list[float]] = {"old": [], "new": []}
            for _ in range(args.repeats):
                runs["old"].append(seconds(old, cmd))
                runs["new"].append(seconds(ROOT, cmd))
            med = {k: statistics.median(v) for k, v in runs.items()}
            cells = [f"{med[k]:.2f} ({min(v):.2f}-{max(v):.2f})" for k, v in runs.items()]
            print(f"| `{name}` | {cells[0]} | {cells[1]} | {med['new'] / med['old']:.2f} |")


if __name__ == "__main__":
    main()
