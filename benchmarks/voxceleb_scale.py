#!/usr/bin/env python3
"""VoxCeleb at its real counts: every stage of run.sh on a VoxCeleb-shaped tree, timed, with peak RSS.

The tree (voxadapt/corpus/voxceleb_tree.py) has VoxCeleb1's and VoxCeleb2 dev's layout, file
names, speaker/video/clip counts and the three cleaned trial lists at `--fraction` of their real
sizes; its audio is hard links to a pool of short recordings (VoxCeleb2's as real AAC through
ffmpeg), so what is measured is the recipe's bookkeeping per file, not decoding real speech.

Steps, each a separate command (wall time and the peak RSS of its largest process):
  tree     build the tree (not a recipe stage)
  stage0   ./run.sh --stage 0: import, header validation + a decoded sample, trial lists
  stage1   ./run.sh --stage 1: lhotse manifests
  stage2   ./run.sh --stage 2: augmentation resources + speed-perturbed training cuts (x3)
  train    ./run.sh --stage 3 with a tiny model: example table, sampler, loader workers, 50 steps
           (the set-up time to the first batch is read from the phase summary)
  stage4   ./run.sh --stage 4: the final model
  stage5   ./run.sh --stage 5 --extract_sets vox1 --nj N: split, N jobs, merge over VoxCeleb1
  stage6   ./run.sh --stage 6: LDA/PLDA/cohort on VoxCeleb2 dev x-vectors; these are random
           vectors written by the benchmark with the model's dimension (extracting 1.09 M
           utterances with a tiny model measures nothing stage 5 on VoxCeleb1 does not)
  stage7   ./run.sh --stage 7: cosine, AS-norm (cohort of every training speaker), PLDA on O/E/H

    python benchmarks/voxceleb_scale.py --fraction 0.1 --work /scratch/vox10 [--nj 2]
    python benchmarks/voxceleb_scale.py --report /scratch/vox10 /scratch/vox30 /scratch/vox100
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("tree", "stage0", "stage1", "stage2", "train", "stage4", "stage5", "stage6", "stage7")
GOAL_RSS_GB = 8.0

CONFIG = """\
# conf/mhfa_tiny.yaml on VoxCeleb: a tiny model, 50 training steps (written by voxceleb_scale.py)
name: voxceleb_scale
seed: 1
data:
  corpus: voxceleb
augment:
  probability: 0.6
  speed_perturb: true
  # No babble: without MUSAN it mixes 3-8 training recordings, each an ffmpeg process for m4a
  weights: {{reverb: 1.0, noise: 1.0, music: 1.0, babble: 0.0}}
loader:
  crop_seconds: 2.0
  batch_size: 64
  num_workers: 2
  batches_per_epoch: 50
model:
  backbone:
    type: wavlm
    path: {root}/models/tiny_wavlm
  pooling:
    type: mhfa
    heads: 16
    compression_dim: 64
    embed_dim: 128
train:
  phases:
    - name: main
      epochs: 1
      trainable_layers: -1
      lr: 5.0e-3
      backbone_lr: 5.0e-4
      margin: 0.1
      checkpoint_every_steps: 0
      average_last: 1
scoring:
  lda_dim: 100
  asnorm_top_n: 300
"""


def measure(cmd: list[str], log: Path) -> dict:
    """Run `cmd` in a child that reports its descendants' peak RSS (the largest single process)."""
    probe = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)")
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-c", probe, *cmd], stdout=out, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT)
    seconds = time.perf_counter() - start
    lines = proc.stderr.strip().splitlines()
    with open(log, "a") as out:
        out.write("\n".join(lines[:-1]) + "\n")
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}); see {log}")
    return {"seconds": round(seconds, 1), "peak_rss_gb": round(int(lines[-1]) / 2**20, 2)}


def write_vox2_xvectors(work: Path, dim: int) -> None:
    """Random x-vectors with speaker structure for every VoxCeleb2 dev utterance (stage 6's input)."""
    import kaldiio
    import numpy as np

    from voxadapt.data.kaldi_dir import DataDir

    d = DataDir.load(work / "data" / "vox2_dev")
    out = work / "exp" / "voxceleb_scale" / "embeddings" / "vox2_dev"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    speakers = {s: i for i, s in enumerate(sorted(d.spk2utt))}
    centres = rng.standard_normal((len(speakers), dim)).astype(np.float32)
    with kaldiio.WriteHelper(f"ark,scp:{out}/xvector.ark,{out}/xvector.scp") as w:
        for utt in d.utterance_ids:
            w(utt, centres[speakers[d.utt2spk[utt]]] + 0.8 * rng.standard_normal(dim).astype(np.float32))


def run_fraction(fraction: float, work: Path, nj: int, only: list[str]) -> None:
    from voxadapt.corpus.voxceleb_tree import build_tree

    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"fraction": fraction, "steps": {}}
    config = work / "voxceleb_scale.yaml"
    config.write_text(CONFIG.format(root=ROOT))
    base = ["bash", "run.sh", "--config", str(config), "--data", str(work / "data"), "--exp", str(work / "exp"),
            "--nj", str(nj)]
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    for step in STEPS:
        if only and step not in only:
            continue
        log = logs / f"{step}.log"
        print(f"[{fraction:g}] {step} ...", flush=True)
        if step.startswith("stage"):  # a measured stage must run, not find itself done
            for marker in (work / "data" / ".done").glob(f"stage{step[-1]}_*.json"):
                marker.unlink()
            for marker in (work / "exp" / "voxceleb_scale" / ".done").glob(f"stage{step[-1]}_*.json"):
                marker.unlink()
        if step == "tree":
            start = time.perf_counter()
            tree = build_tree(work / "tree", fraction)
            r = {"seconds": round(time.perf_counter() - start, 1), "vox1_utts": tree.vox1_utts,
                 "vox2_utts": tree.vox2_utts, "trials": tree.trials}
        elif step == "stage0":
            r = measure([*base, "--stage", "0", "--stop_stage", "0", "--voxceleb1_root", str(work / "tree" / "vox1"),
                         "--voxceleb2_root", str(work / "tree" / "vox2")], log)
        elif step in ("stage1", "stage2", "stage4", "stage6", "stage7"):
            n = step[-1]
            if step == "stage6":
                write_vox2_xvectors(work, 128)
            r = measure([*base, "--stage", n, "--stop_stage", n], log)
        elif step == "train":
            phase = work / "exp" / "voxceleb_scale" / "main"
            shutil.rmtree(phase, ignore_errors=True)
            r = measure([*base, "--stage", "3", "--stop_stage", "3"], log)
            summary = json.loads((phase / "summary.json").read_text())
            r.update(ready_seconds=summary["ready_seconds"], seconds_per_step=summary["seconds_per_step"])
        elif step == "stage5":
            shutil.rmtree(work / "exp" / "voxceleb_scale" / "embeddings" / "vox1", ignore_errors=True)
            r = measure([*base, "--stage", "5", "--stop_stage", "5", "--extract_sets", "vox1"], log)
        results["steps"][step] = r
        print(f"[{fraction:g}] {step}: {r}", flush=True)
        results_path.write_text(json.dumps(results, indent=1) + "\n")
    results["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    results_path.write_text(json.dumps(results, indent=1) + "\n")


def report(works: list[Path]) -> None:
    runs = sorted((json.loads((w / "results.json").read_text()) for w in works), key=lambda r: r["fraction"])
    fr = [r["fraction"] for r in runs]
    spans = list(zip(fr, fr[1:]))
    print("| step | " + " | ".join(f"{100 * f:g} %: time, peak RSS" for f in fr) + " | "
          + " | ".join(f"time exponent {100 * a:g}->{100 * b:g} %" for a, b in spans) + " |")
    print("|---|" + "---|" * (len(fr) + len(spans)))
    rows = [(step, step, "seconds") for step in STEPS]
    rows.insert(STEPS.index("train") + 1, ("train: set-up to the first batch", "train", "ready_seconds"))
    for label, step, key in rows:
        cells, times = [], []
        for r in runs:
            s = r["steps"].get(step)
            if s and key == "seconds" and "peak_rss_gb" in s:
                cells.append(f"{s['seconds']:.0f} s, {s['peak_rss_gb']:.2f} GB")
            else:
                cells.append(f"{s[key]:.0f} s" if s else "-")
            times.append(s[key] if s else None)
        # time ~ n^k between two fractions: k = 1 is linear, n log n is about 1.1 here
        slopes = [f"{math.log(tb / ta) / math.log(b / a):.2f}" if ta and tb else "-"
                  for (a, b), ta, tb in zip(spans, times, times[1:])]
        print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(slopes) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fraction", type=float, help="of VoxCeleb's real counts (1.0: 1,245,525 files)")
    ap.add_argument("--work", type=Path, help="scratch directory (the tree, data, exp, logs, results.json)")
    ap.add_argument("--nj", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=[], choices=STEPS, help="run these steps only")
    ap.add_argument("--report", nargs="*", type=Path, help="print the table of these work directories")
    args = ap.parse_args()
    if args.report:
        report(args.report)
    elif args.fraction and args.work:
        run_fraction(args.fraction, args.work, args.nj, args.only)
    else:
        ap.error("give --fraction and --work, or --report DIR...")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
