#!/usr/bin/env python3
"""Waveform-to-embedding speed on CPU: onnxruntime (the exported graph) vs PyTorch, one utterance
at a time (what `voxadapt embed` and a serving process do), same utterances, same thread count.

Models: the shipped tiny WavLM + the default MHFA pooling, and the WavLM Base+ architecture +
MHFA (random init: the real model's compute). Utterances 2-20 s, log-uniform.
    python benchmarks/onnx_speed.py [--utts 12] [--threads N] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SR = 16000
ROOT = Path(__file__).resolve().parent.parent
# name -> (config, overrides)
MODELS = {
    "tiny WavLM (models/tiny_wavlm) + MHFA of conf/mhfa_tiny.yaml": (
        ROOT / "conf" / "mhfa_tiny.yaml", [f"model.backbone.path={ROOT / 'models' / 'tiny_wavlm'}"]),
    "WavLM Base+ architecture + MHFA (64 heads)": (None, ["model.backbone.type=wavlm"]),
}


def measure(config: Path | None, overrides: list[str], wavs: list[np.ndarray], threads: int, rounds: int) -> tuple[float, float, float]:
    import onnxruntime as ort

    from voxadapt.config import load_config
    from voxadapt.models.speaker import build_model
    from voxadapt.onnx_export import export_onnx

    model = build_model(load_config(config, overrides), 1)[0].eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        cosine = export_onnx(model, path, SR, None)  # the bare model: what the timing compares
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

        def run_torch() -> None:
            with torch.inference_mode():
                for w in wavs:
                    model(torch.from_numpy(w)[None])

        def run_onnx() -> None:
            for w in wavs:
                session.run(None, {"waveform": w[None]})

        run_torch(), run_onnx()  # warm-up
        t_torch, t_onnx = [], []
        for _ in range(rounds):
            for fn, out in ((run_torch, t_torch), (run_onnx, t_onnx)):
                start = time.perf_counter()
                fn()
                out.append(time.perf_counter() - start)
    return min(t_torch), min(t_onnx), cosine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utts", type=int, default=12)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    wavs = [rng.standard_normal(int(SR * s)).astype(np.float32) * 0.1
            for s in np.exp(rng.uniform(np.log(2.0), np.log(20.0), args.utts))]
    audio_s = sum(len(w) for w in wavs) / SR
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.threads} threads for both; {args.utts} utterances, {audio_s:.0f} s of audio; best of {args.rounds}\n")
    print("| model | PyTorch s | onnxruntime s | PyTorch audio s / s | onnxruntime audio s / s | onnx / torch time | "
          "cosine ONNX vs PyTorch |")
    print("|---|---|---|---|---|---|---|")
    for name, (config, overrides) in MODELS.items():
        t_torch, t_onnx, cosine = measure(config, overrides, wavs, args.threads, args.rounds)
        print(f"| {name} | {t_torch:.2f} | {t_onnx:.2f} | {audio_s / t_torch:.0f} | {audio_s / t_onnx:.0f} | "
              f"{t_onnx / t_torch:.2f} | {cosine:.6f} |", flush=True)


if __name__ == "__main__":
    main()
