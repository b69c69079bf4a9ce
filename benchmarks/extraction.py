#!/usr/bin/env python3
"""X-vector extraction speed against the roofline, WavLM Base+ or w2v-BERT 2.0 architecture
(--backbone) + MHFA (random init: the real model's compute), whole utterances of 2-20 s
(log-uniform, VoxCeleb1-test-like).

Roofline: the model's matmul/conv FLOPs for these utterances (torch's FlopCounterMode, fitted per
length as a + b*n + c*n^2 from three counted lengths) divided by the fp32 matrix-multiply rate
measured in the same run. A variant at 1.00x would run every FLOP at the sgemm rate.
    python benchmarks/extraction.py [--backbone wavlm|w2v-bert] [--utts 16] [--threads N] [--device cpu|cuda] [--profile]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time

import numpy as np
import torch

from voxadapt.models.adapters import merge_lora

SR = 16000
# transformers' defaults are WavLM Base+'s and w2v-BERT 2.0's shapes; one key named makes it a config-only model.
ARCH = {"wavlm": '{"num_hidden_layers": 12}', "w2v-bert": '{"num_hidden_layers": 24}'}


def matmul_rate(device: str, size: int = 2048, reps: int = 20) -> float:
    """Best-of fp32 FLOP/s of a square matrix multiply."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def count_flops(model: torch.nn.Module, seconds: float, device: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, int(seconds * SR), device=device))
    return float(counter.get_total_flops())


def flops_per_utterance(model: torch.nn.Module, lengths: list[int], device: str) -> np.ndarray:
    # On a copy with the weight parametrization (the positional conv's weight norm) folded: the
    # counter cannot trace through it, and it costs nothing measurable.
    model = copy.deepcopy(model)
    merge_lora(model)
    points = [2.0, 10.0, 20.0]
    coeff = np.polyfit(points, [count_flops(model, s, device) for s in points], 2)
    return np.polyval(coeff, np.array(lengths) / SR)


def onnx_stage5(model, wavs: list[np.ndarray], device: str, bf16: bool = False) -> None:  # noqa: ANN001
    stage5_path(model.onnx, wavs, device)  # the exported graph, built once per job as stage 5 does


def one_at_a_time(model: torch.nn.Module, wavs: list[np.ndarray], device: str, bf16: bool = False) -> None:
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        for w in wavs:
            model(torch.from_numpy(w)[None].to(device))


def stage5_path(model: torch.nn.Module, wavs: list[np.ndarray], device: str, bf16: bool = False,
                **opts: float) -> None:
    from voxadapt.config import ExtractConfig
    from voxadapt.embed import embed_waveforms

    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        embed_waveforms(model, wavs, SR, ExtractConfig(**opts), device)


def length_batches(model: torch.nn.Module, wavs: list[np.ndarray], device: str, bf16: bool = False) -> None:
    stage5_path(model, wavs, device, bf16, batch_seconds=200.0)


def wide_batches(model: torch.nn.Module, wavs: list[np.ndarray], device: str, bf16: bool = False) -> None:
    stage5_path(model, wavs, device, bf16, batch_seconds=200.0, max_padding=1e9)


VARIANTS = {
    "one utterance at a time, no_grad (plain forward)": (one_at_a_time, False),
    "stage 5 on a CPU with engine torch (PyTorch, the default before): one piece per batch, inference_mode": (stage5_path, False),
    "stage 5 on a CPU now (engine auto: the ONNX graph through onnxruntime)": (onnx_stage5, False),
    "stage 5 on a GPU: 200 s batches of lengths within 5 %, masked": (length_batches, False),
    "200 s batches by sorted length, no padding cap": (wide_batches, False),
    "one utterance at a time, bf16 autocast": (one_at_a_time, True),
}


def profile(model: torch.nn.Module, device: str) -> None:
    """Where one 10 s utterance's time goes: the top operators by self time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    x = torch.randn(1, 10 * SR, device=device)
    with torch.inference_mode():
        model(x)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=list(ARCH), default="wavlm")
    parser.add_argument("--utts", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="only show where one 10 s utterance's time goes")
    parser.add_argument("--skip", action="append", default=[], metavar="WORDS",
                        help="leave out the variants whose name contains WORDS (e.g. bf16; repeatable)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for words in args.skip:
        for name in [n for n in VARIANTS if words in n]:
            del VARIANTS[name]
    from voxadapt.config import load_config
    from voxadapt.models.speaker import build_model

    cfg = load_config(None, [f"model.backbone.type={args.backbone}", f"model.backbone.arch={ARCH[args.backbone]}"])
    model = build_model(cfg, 1)[0].eval().to(args.device)
    if args.profile:
        profile(model, args.device)
        return
    rng = np.random.default_rng(0)
    lengths = [int(SR * s) for s in np.exp(rng.uniform(np.log(2.0), np.log(20.0), args.utts))]
    wavs = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in lengths]
    audio_s = sum(lengths) / SR
    flops = float(flops_per_utterance(model, lengths, args.device).sum())
    rate = matmul_rate(args.device)
    roofline_s = flops / rate
    if args.device == "cpu":
        from voxadapt.onnx_export import OnnxEmbedder

        start = time.perf_counter()
        model.onnx, _ = OnnxEmbedder.exported(model, SR, torch.get_num_threads())
        export_s = time.perf_counter() - start
        with torch.inference_mode():  # parity on these real-length utterances, not only the export's probe
            cosines = [float(torch.nn.functional.cosine_similarity(model(torch.from_numpy(w)[None]),
                                                                   model.onnx(torch.from_numpy(w)[None]))[0]) for w in wavs]
    else:
        VARIANTS.pop("stage 5 on a CPU now (engine auto: the ONNX graph through onnxruntime)", None)
    one_at_a_time(model, wavs[:2], args.device)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):  # interleaved rounds: a shared machine's drift hits every variant
        for name, (fn, bf16) in VARIANTS.items():
            sync(args.device)
            start = time.perf_counter()
            fn(model, wavs, args.device, bf16)
            sync(args.device)
            times[name].append(time.perf_counter() - start)
    print(f"Backbone: {args.backbone} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters with MHFA). "
          f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}; {args.utts} utterances, {audio_s:.0f} s of audio "
          f"(2-20 s); {flops / audio_s / 1e9:.1f} GFLOP per second of audio; fp32 matmul rate "
          f"{rate / 1e9:.0f} GFLOP/s; roofline {roofline_s:.1f} s (RTF {roofline_s / audio_s:.3f}); best of "
          f"{args.rounds} rounds\n")
    if args.device == "cpu":
        print(f"ONNX export + session (once per stage-5 job): {export_s:.1f} s; cosine ONNX vs PyTorch over the "
              f"{args.utts} utterances: min {min(cosines):.6f}\n")
    print("| variant | seconds | audio s / s | RTF | x roofline |")
    print("|---|---|---|---|---|")
    for name, ts in times.items():
        t = min(ts)
        print(f"| {name} | {t:.1f} | {audio_s / t:.1f} | {t / audio_s:.3f} | {t / roofline_s:.2f} |")


if __name__ == "__main__":
    main()
