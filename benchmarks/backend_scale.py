#!/usr/bin/env python3
"""Back-end cost at VoxCeleb's real sizes, on random embeddings with speaker structure.

Three measurements, each in its own process (so each peak RSS is its own):
  train   mean + LDA (256 -> 200) + length norm + two-covariance PLDA (EM) + AS-norm cohort, on
          1,092,009 x 256 x-vectors of 5,994 speakers (VoxCeleb2 dev) -- stage 6's train_backend
  asnorm  cosine + AS-norm (5,994-speaker cohort, top 300) over 579,818 trials among 145,160
          utterances (VoxCeleb1-E) -- stage 7's score_trials, including the trial lookup
  metrics EER + minDCF at two priors over 1,000,000 trials
    python benchmarks/backend_scale.py [--only train|asnorm|metrics] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

VOX2_DEV_UTTS, VOX2_SPEAKERS = 1_092_009, 5_994
VOX1_E_TRIALS, VOX1_UTTS = 579_818, 145_160
METRIC_TRIALS = 1_000_000
DIM = 256


def speaker_data(n: int, speakers: int, seed: int):  # noqa: ANN201 - (x, labels)
    """Speaker means plus within-speaker noise: the structure LDA and PLDA are fitted to."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, speakers, n)
    centres = rng.standard_normal((speakers, DIM)).astype(np.float32)
    x = centres[labels]
    for s in range(0, n, 100_000):  # in chunks: the generator's temporaries must not set the peak
        x[s:s + 100_000] += 0.8 * rng.standard_normal((min(100_000, n - s), DIM), dtype=np.float32)
    return x, labels, centres


def bench_train(scale: float) -> dict:
    from voxadapt.backend.scoring import Embeddings
    from voxadapt.backend.training import train_backend
    from voxadapt.config import ScoringConfig

    n = int(VOX2_DEV_UTTS * scale)
    x, labels, _ = speaker_data(n, VOX2_SPEAKERS, 0)
    ids = [f"u{i:07d}" for i in range(n)]
    utt2spk = {u: f"s{lab:04d}" for u, lab in zip(ids, labels)}
    emb = Embeddings(ids, x)
    del x
    cfg = ScoringConfig(lda_dim=200)
    start = time.perf_counter()
    backend, history = train_backend(emb, utt2spk, cfg)
    seconds = time.perf_counter() - start
    assert all(b >= a - 1e-6 * abs(a) for a, b in zip(history, history[1:])), history
    return {"seconds": seconds, "plda_iters": len(history), "items": n, "lda_dim": int(backend.lda.shape[0])}


def bench_asnorm(scale: float) -> dict:
    import numpy as np

    from voxadapt.backend.scoring import Backend, Embeddings, score_trials
    from voxadapt.data.trials import Trial

    n_utts, n_trials = int(VOX1_UTTS * scale), int(VOX1_E_TRIALS * scale)
    x, labels, centres = speaker_data(n_utts, 1_251, 1)
    rng = np.random.default_rng(2)
    ids = [f"u{i:06d}" for i in range(n_utts)]
    a, b = rng.integers(0, n_utts, n_trials), rng.integers(0, n_utts, n_trials)
    trials = [Trial(ids[i], ids[j], bool(labels[i] == labels[j])) for i, j in zip(a, b)]
    cohort = rng.standard_normal((VOX2_SPEAKERS, DIM)).astype(np.float32)
    backend = Backend(mean=np.zeros(DIM), cohort=cohort)
    emb = Embeddings(ids, x)
    start = time.perf_counter()
    scores = score_trials(backend, emb, trials, ["cosine", "asnorm"], top_n=300)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "items": n_trials, "finite": bool(np.isfinite(scores["asnorm"]).all())}


def bench_metrics(scale: float) -> dict:
    import numpy as np

    from voxadapt.metrics import eer, min_dcf

    n = int(METRIC_TRIALS * scale)
    rng = np.random.default_rng(3)
    labels = rng.random(n) < 0.1
    scores = rng.standard_normal(n) + 2.0 * labels
    start = time.perf_counter()
    value, _ = eer(scores, labels)
    dcfs = [min_dcf(scores, labels, p)[0] for p in (0.01, 0.05)]
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "items": n, "eer": value, "min_dcf": dcfs}


BENCHES = {"train": bench_train, "asnorm": bench_asnorm, "metrics": bench_metrics}
LABELS = {
    "train": "LDA 256->200 + PLDA (EM) + cohort, VoxCeleb2 dev x-vectors",
    "asnorm": "cosine + AS-norm (cohort 5,994, top 300), VoxCeleb1-E trials",
    "metrics": "EER + minDCF (2 priors)",
}
GOALS = {"train": 60.0, "asnorm": 30.0, "metrics": 2.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=list(BENCHES))
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the real sizes (quick checks)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one measurement in this process
    args = parser.parse_args()
    if args.child:
        result = BENCHES[args.child](args.scale)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    import numpy as np

    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}; "
          f"scale {args.scale:g}\n")
    print("| step | items | seconds | goal (s) | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for name in [args.only] if args.only else BENCHES:
        out = subprocess.run([sys.executable, __file__, "--child", name, "--scale", str(args.scale)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {LABELS[name]} | {r['items']:,} | {r['seconds']:.2f} | {GOALS[name]:g} | {r['peak_rss_mb']:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
