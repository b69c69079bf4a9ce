#!/usr/bin/env python3
"""AS-norm at VoxCeleb1-E scale as a user runs it: the whole `pyscripts/score_trials.py` command.

Writes 150,000 x 256 x-vectors (Kaldi ark/scp, 1,251 speakers), a 577,496-trial Kaldi list among
them, a 5,994-vector cohort scp and a double-precision mean.vec, then runs

    score_trials.py --scp xvector.scp --trials trials --mean mean.vec --cohort-scp cohort.scp \\
        --method asnorm --top-n 300 --out scores

from a baseline revision (`git archive`, default: the commit before the fast path) and from this
tree, one after the other, each in its own process: wall time and peak RSS of the command, the
largest score difference and both EERs. `--profile` adds the new command's profile (cProfile).

    python benchmarks/asnorm_command.py --work /tmp/asnorm [--baseline REV] [--profile]

This machine is a virtual machine whose host reclaims guest memory the guest has freed: touching
such memory again costs about 2.7 s per GB. Each command runs right after a process that touched
3 GB, so both find the same warm memory.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "3166226"  # the last commit before the AS-norm fast path
UTTS, SPEAKERS, DIM, TRIALS, COHORT = 150_000, 1_251, 256, 577_496, 5_994


def make_inputs(work: Path) -> None:
    import kaldiio
    import numpy as np

    if (work / "trials").is_file():
        return
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, SPEAKERS, UTTS)
    centres = rng.standard_normal((SPEAKERS, DIM)).astype(np.float32)
    x = centres[labels] + 3.0 * rng.standard_normal((UTTS, DIM), dtype=np.float32) + 3.0  # offset: the mean matters
    ids = [f"id{lab:05d}-u{i:06d}" for i, lab in enumerate(labels)]
    with kaldiio.WriteHelper(f"ark,scp:{work}/xvector.ark,{work}/xvector.scp") as w:
        for i in np.argsort(ids):
            w(ids[i], x[i])
    cohort = (rng.standard_normal((COHORT, DIM)) + 3.0).astype(np.float32)
    with kaldiio.WriteHelper(f"ark,scp:{work}/cohort.ark,{work}/cohort.scp") as w:
        for i, vec in enumerate(cohort):
            w(f"cohort{i:05d}", vec)
    kaldiio.save_mat(str(work / "mean.vec"), x.mean(0).astype(np.float64))  # double, as Kaldi's ivector-mean writes
    seen: set[tuple[int, int]] = set()
    with open(work / "trials.tmp", "w") as f:
        for i, j in zip(rng.integers(0, UTTS, 2 * TRIALS), rng.integers(0, UTTS, 2 * TRIALS)):
            if i != j and (i, j) not in seen:
                seen.add((i, j))
                f.write(f"{ids[i]} {ids[j]} {'target' if labels[i] == labels[j] else 'nontarget'}\n")
                if len(seen) == TRIALS:
                    break
    os.replace(work / "trials.tmp", work / "trials")


def warm_memory(gigabytes: float = 3.0) -> None:
    subprocess.run([sys.executable, "-c", f"import numpy as np; np.ones(int({gigabytes} * 2**28), np.float32)"],
                   check=True)


def run_command(source: Path, work: Path, out: str, profile: bool) -> dict:
    cmd = [sys.executable, *(["-m", "cProfile", "-s", "cumtime"] if profile else []),
           str(source / "pyscripts" / "score_trials.py"), "--scp", str(work / "xvector.scp"),
           "--trials", str(work / "trials"), "--mean", str(work / "mean.vec"), "--cohort-scp",
           str(work / "cohort.scp"), "--method", "asnorm", "--top-n", "300", "--out", str(work / out)]
    env = {**os.environ, "PYTHONPATH": str(source)}  # the baseline's package, not the installed one
    warm_memory()
    log = work / f"{out}.log"
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak RSS, not the warm-up's
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    output = log.read_text()
    if proc.returncode:
        raise SystemExit(f"{source}: command failed:\n{output}")
    eer = re.search(r"EER ([0-9.]+)%", output)
    return {"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024, "eer": eer[1] if eer else "-", "output": output}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, type=Path, help="where the inputs and scores are written")
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the old command")
    parser.add_argument("--profile", action="store_true", help="print the new command's profile")
    args = parser.parse_args()
    make_inputs(args.work)
    import numpy as np

    with tempfile.TemporaryDirectory() as old_tree:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "voxadapt", "pyscripts"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", old_tree], input=archive, check=True)
        runs = {"old": run_command(Path(old_tree), args.work, "scores.old", False),
                "new": run_command(ROOT, args.work, "scores.new", False)}
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; baseline {args.baseline}\n")
    print("| command | seconds | peak RSS (MB) | EER (%) |")
    print("|---|---|---|---|")
    for name, r in runs.items():
        print(f"| {name} | {r['seconds']:.2f} | {r['rss_mb']:.0f} | {r['eer']} |")
    old, new = (np.loadtxt(args.work / f"scores.{n}", usecols=2) for n in ("old", "new"))
    print(f"\nnew / old time {runs['new']['seconds'] / runs['old']['seconds']:.3f}; "
          f"largest score difference {np.abs(old - new).max():.2e}")
    if args.profile:
        print(run_command(ROOT, args.work, "scores.profile", True)["output"][:6000])


if __name__ == "__main__":
    main()
