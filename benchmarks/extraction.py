#!/usr/bin/env python3
"""X-vector extraction speed against the roofline, WavLM Base+ and Large and w2v-BERT 2.0 architectures
+ MHFA (random init: the real models' compute), whole utterances of 2-20 s (log-uniform, VoxCeleb1-test-like).

Roofline: the model's matmul/conv FLOPs for these utterances (torch's FlopCounterMode, fitted per
length as a + b*n + c*n^2 from three counted lengths) divided by the fp32 matrix-multiply rate
measured in the same run. A variant at 1.00x would run every FLOP at the sgemm rate. The int8
engine (extract.engine onnx-int8) does its matrix multiplies in int8, which this roofline does not
count: it can go below 1.00x. Peak memory is the process's peak RSS while the variant ran (reset
before each run through /proc/self/clear_refs; it includes the models the process holds).
    python benchmarks/extraction.py [--utts 16] [--threads N] [--device cpu|cuda] [--arch NAME] [--int8-choices] [--profile]
    (--arch: "WavLM Base+", "WavLM Large" (the default: both), "w2v-BERT 2.0", "shipped tiny WavLM"; repeatable)
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
from voxadapt.onnx_export import quantize_int8

SR = 16000


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


def int8_stage5(model, wavs: list[np.ndarray], device: str, bf16: bool = False) -> None:  # noqa: ANN001
    stage5_path(model.int8, wavs, device)  # the graph quantised once per job as stage 5 does


def static_convolutions(graph, out, calibration: list[np.ndarray], only: str = "") -> None:  # noqa: ANN001
    """The convolutions but the first (on the raw waveform), or only those whose name contains
    `only`, as QLinearConv with activation ranges calibrated on `calibration`, then the engine's
    dynamic MatMul/Gemm on top."""
    import tempfile
    from pathlib import Path

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Feed(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{"waveform": w[None]} for w in calibration])

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    convs = [n.name for n in onnx.load(str(graph), load_external_data=False).graph.node if n.op_type == "Conv"]
    left_fp32 = [c for i, c in enumerate(convs) if i == 0 or only not in c]
    with tempfile.TemporaryDirectory() as tmp:
        quantized = Path(tmp) / "convs.onnx"
        quantize_static(str(graph), str(quantized), Feed(), quant_format=QuantFormat.QOperator, op_types_to_quantize=["Conv"],
                        per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=left_fp32)
        quantize_int8(quantized, out)


def speech(count: int, seed: int) -> list[np.ndarray]:
    """`count` utterances of 2-8 s, each in another voice drawn as the corpus generator draws them
    (`seed` keeps them apart from its corpora's), conditioned as stage 5 conditions audio: speech,
    with the pauses between and around words that noise lacks."""
    import tempfile
    from pathlib import Path

    from voxadapt.config import ExtractConfig
    from voxadapt.config.data import SyntheticConfig
    from voxadapt.corpus.espeak import Espeak, make_data_root
    from voxadapt.corpus.synthetic import draw_voice, render_utterance, seeded_rng
    from voxadapt.embed import probe_waveforms

    voices = [draw_voice(f"vxbench{seed}x{i}", seeded_rng(seed, i, 0)) for i in range(count)]
    with tempfile.TemporaryDirectory() as tmp:
        engine = Espeak(make_data_root(Path(tmp), {v.name: v.variant_file() for v in voices}))
        wavs = [render_utterance(engine, v, seeded_rng(seed, i, 1), SyntheticConfig(), SR).astype(np.float32)
                for i, v in enumerate(voices)]
    return probe_waveforms(wavs, SR, ExtractConfig())


# The quantisation choices int8_stage5's graph was picked from (--int8-choices): name -> how to make it
# from the fp32 graph (fp32 path, output path, calibration utterances: speech in other voices)
INT8_CHOICES = {
    "int8 MatMul/Gemm, 8-bit weights (the engine before 2026-12-07)": lambda graph, out, cal: quantize_int8(
        graph, out, reduce_range=False),
    "int8 MatMul/Gemm, per tensor": lambda graph, out, cal: quantize_int8(graph, out, ("MatMul", "Gemm"), False),
    "int8 MatMul/Gemm + Conv (ConvInteger), per channel": lambda graph, out, cal: quantize_int8(graph, out, ("MatMul", "Gemm", "Conv")),
    "int8 MatMul/Gemm + Conv static (QLinearConv, 7-bit weights, calibrated on 6 utterances of speech; not the first conv)":
        static_convolutions,
    "int8 MatMul/Gemm + the positional convolution static (QLinearConv, calibrated as above)":
        lambda graph, out, cal: static_convolutions(graph, out, cal, only="pos_conv"),
}


def choice_variant(name: str):  # noqa: ANN201
    def run(model, wavs: list[np.ndarray], device: str, bf16: bool = False) -> None:  # noqa: ANN001
        stage5_path(model.choices[name], wavs, device)
    return run


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


ONNX_VARIANTS = ("engine auto", "engine onnx-int8")
# name -> (backbone type, architecture); transformers' defaults are WavLM Base+'s and w2v-BERT 2.0's shapes
ARCH = {"WavLM Base+": ("wavlm", {"num_hidden_layers": 12}),
        "WavLM Large": ("wavlm", {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                                  "intermediate_size": 4096, "do_stable_layer_norm": True, "feat_extract_norm": "layer",
                                  "conv_bias": True}),
        "w2v-BERT 2.0": ("w2v-bert", {"num_hidden_layers": 24}),
        "shipped tiny WavLM": ("", {})}  # conf/mhfa_tiny.yaml: pre-trained weights, so speech means something
DEFAULT_ARCHS = ["WavLM Base+", "WavLM Large"]
VARIANTS = {
    "one utterance at a time, no_grad (plain forward)": (one_at_a_time, False),
    "stage 5 on a CPU with engine torch (PyTorch, the default before): one piece per batch, inference_mode": (stage5_path, False),
    "stage 5 on a CPU now (engine auto: the ONNX graph through onnxruntime)": (onnx_stage5, False),
    "stage 5 on a CPU with engine onnx-int8 (int8 MatMul/Gemm, dynamic, per channel, 7-bit weights)": (int8_stage5, False),
    "stage 5 on a GPU: 200 s batches of lengths within 5 %, masked": (length_batches, False),
    "200 s batches by sorted length, no padding cap": (wide_batches, False),
    "one utterance at a time, bf16 autocast": (one_at_a_time, True),
}


def profile(model: torch.nn.Module, device: str) -> None:
    """Where one 10 s utterance's time goes: the top operators by self time, in PyTorch and (on a
    CPU) in the int8 engine's graph."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    x = torch.randn(1, 10 * SR, device=device)
    with torch.inference_mode():
        model(x)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
    if device == "cpu":
        profile_int8(model, x.numpy())


def profile_int8(model: torch.nn.Module, x: np.ndarray, rounds: int = 3) -> None:
    """The int8 engine's graph (onnxruntime's own profiler): time by operator type and, for the
    convolutions, by node: what stays fp32 and what int8 already covers."""
    import json
    import tempfile
    from collections import defaultdict
    from pathlib import Path

    import onnxruntime as ort

    from voxadapt.onnx_export import export_onnx

    with tempfile.TemporaryDirectory() as work:
        fp32, int8 = Path(work) / "model.onnx", Path(work) / "model.int8.onnx"
        export_onnx(model, fp32, SR, None)
        quantize_int8(fp32, int8)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = torch.get_num_threads(), 1
        opts.enable_profiling, opts.profile_file_prefix = True, str(Path(work) / "trace")
        session = ort.InferenceSession(str(int8), opts, providers=["CPUExecutionProvider"])
        for _ in range(rounds):
            session.run(None, {"waveform": x})
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = defaultdict(float)
    by_conv: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"] / rounds / 1e3
            if e["args"]["op_name"] == "Conv":
                by_conv[e["name"].removesuffix("_kernel_time")] += e["dur"] / rounds / 1e3
    total = sum(by_op.values())
    print(f"int8 engine graph, one 10 s utterance: {total:.0f} ms in operators (mean of {rounds} runs)\n")
    print("| operator | ms | share |\n|---|---|---|")
    for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1])[:12]:
        print(f"| {op} | {ms:.0f} | {ms / total:.1%} |")
    print("\n| convolution (fp32) | ms | share |\n|---|---|---|")
    for node, ms in by_conv.items():
        print(f"| {node} | {ms:.0f} | {ms / total:.1%} |")


def int8_instructions() -> str:
    """What the CPU offers int8 kernels: with VNNI they add u8 x s8 products in 32 bits."""
    try:
        flags = set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return "CPU flags unknown"
    vnni = sorted(f for f in flags if "vnni" in f)
    return ", ".join(vnni) if vnni else ("AVX2, no VNNI" if "avx2" in flags else "no AVX2")


def peak_rss_reset() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # Linux: resets VmHWM to the current RSS
        f.write("5")


def rss_mb(field: str = "VmHWM") -> float:
    """The process's peak (VmHWM) or current (VmRSS) resident memory."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def cosines(a, b, wavs: list[np.ndarray]) -> list[float]:  # noqa: ANN001
    with torch.inference_mode():
        return [float(torch.nn.functional.cosine_similarity(a(torch.from_numpy(w)[None]), b(torch.from_numpy(w)[None]))[0])
                for w in wavs]


def build_engines(model: torch.nn.Module, wavs: list[np.ndarray], work: str, choose: bool) -> str:
    """model.onnx and model.int8 as stage 5 builds them; returns what it cost, as a line."""
    from pathlib import Path

    from voxadapt.onnx_export import OnnxEmbedder, export_onnx

    threads = torch.get_num_threads()
    model.choices = {}
    fp32, int8 = Path(work) / "model.onnx", Path(work) / "model.int8.onnx"
    start = time.perf_counter()
    export_onnx(model, fp32, SR, None)
    held = rss_mb("VmRSS")
    model.onnx = OnnxEmbedder(fp32, threads)
    fp32_mb = rss_mb("VmRSS") - held
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    quantize_int8(fp32, int8)
    held = rss_mb("VmRSS")
    model.int8 = OnnxEmbedder(int8, threads)
    int8_mb = rss_mb("VmRSS") - held
    quant_s = time.perf_counter() - start
    # parity on these real-length utterances, not only the export's probe
    onnx_cos, int8_cos = cosines(model, model.onnx, wavs), cosines(model.onnx, model.int8, wavs)
    choices = ""
    if choose:  # accuracy on speech too: its pauses are where activation ranges fixed in advance fail
        calibration, spoken = speech(6, 7001), speech(16, 7002)
        choices = f"; int8 vs fp32 ONNX on 16 utterances of speech: smallest cosine {min(cosines(model.onnx, model.int8, spoken)):.6f}"
    for name, make in INT8_CHOICES.items() if choose else ():
        path = Path(work) / f"{len(model.choices)}.onnx"
        make(fp32, path, calibration)
        model.choices[name] = OnnxEmbedder(path, threads)
        on_speech = cosines(model.onnx, model.choices[name], spoken)
        choices += (f"; {name}: graph {path.stat().st_size / 1e6:.0f} MB, smallest cosine vs fp32 ONNX "
                    f"{min(cosines(model.onnx, model.choices[name], wavs)):.6f} on the timed noise, "
                    f"{min(on_speech):.6f} (median {np.median(on_speech):.6f}) on speech")
    return (f"ONNX export + session (once per stage-5 job): {export_s:.1f} s, graph {fp32.stat().st_size / 1e6:.0f} MB; "
            f"int8 quantisation + session (once per job): {quant_s:.1f} s, graph {int8.stat().st_size / 1e6:.0f} MB; "
            f"resident memory a session adds: fp32 {fp32_mb:.0f} MB, int8 {int8_mb:.0f} MB; smallest cosine over the "
            f"utterances: ONNX vs PyTorch {min(onnx_cos):.6f}, int8 vs fp32 ONNX {min(int8_cos):.6f}{choices}")


def measure(arch: str, wavs: list[np.ndarray], args: argparse.Namespace) -> None:
    import json
    import tempfile
    from pathlib import Path

    from voxadapt.config import load_config
    from voxadapt.models.speaker import build_model

    backbone, shape = ARCH[arch]
    cfg = (load_config(None, [f"model.backbone.type={backbone}", f"model.backbone.arch={json.dumps(shape)}"]) if backbone
           else load_config(Path(__file__).parents[1] / "conf" / "mhfa_tiny.yaml"))
    model = build_model(cfg, 1)[0].eval().to(args.device)
    if args.profile:
        profile(model, args.device)
        return
    variants = {n: v for n, v in VARIANTS.items() if args.device == "cpu" or not any(w in n for w in ONNX_VARIANTS)}
    audio_s = sum(len(w) for w in wavs) / SR
    flops = float(flops_per_utterance(model, [len(w) for w in wavs], args.device).sum())
    rate = matmul_rate(args.device)
    roofline_s = flops / rate
    with tempfile.TemporaryDirectory() as work:  # the sessions hold the graphs: the files can go
        engines = build_engines(model, wavs, work, args.int8_choices) if args.device == "cpu" else ""
    if args.int8_choices:
        variants.update({f"stage 5 on a CPU with {name}": (choice_variant(name), False) for name in INT8_CHOICES})
    one_at_a_time(model, wavs[:2], args.device)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in variants}
    peaks: dict[str, float] = {name: 0.0 for name in variants}
    for _ in range(args.rounds):  # interleaved rounds: a shared machine's drift hits every variant
        for name, (fn, bf16) in variants.items():
            sync(args.device)
            peak_rss_reset()
            start = time.perf_counter()
            fn(model, wavs, args.device, bf16)
            sync(args.device)
            times[name].append(time.perf_counter() - start)
            peaks[name] = max(peaks[name], rss_mb())
    print(f"## {arch} + MHFA\n\nMachine: {platform.processor() or platform.machine()} ({int8_instructions()}), "
          f"{os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; {len(wavs)} utterances, "
          f"{audio_s:.0f} s of audio (2-20 s); {flops / audio_s / 1e9:.1f} GFLOP per second of audio; fp32 matmul rate "
          f"{rate / 1e9:.0f} GFLOP/s; roofline {roofline_s:.1f} s (RTF {roofline_s / audio_s:.3f}); best of "
          f"{args.rounds} rounds\n")
    if engines:
        print(engines + "\n")
    onnx = next((min(ts) for n, ts in times.items() if "engine auto" in n), None)
    print("| variant | seconds | audio s / s | RTF | x roofline | speed x fp32 ONNX | process peak RSS (MB; all engines held) |")
    print("|---|---|---|---|---|---|---|")
    for name, ts in times.items():
        t = min(ts)
        print(f"| {name} | {t:.1f} | {audio_s / t:.1f} | {t / audio_s:.3f} | {t / roofline_s:.2f} | "
              f"{f'{onnx / t:.2f}' if onnx else '-'} | {peaks[name]:.0f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utts", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", action="store_true",
                        help="only show where one 10 s utterance's time goes (PyTorch, and the int8 engine's graph by operator)")
    parser.add_argument("--skip", action="append", default=[], metavar="WORDS",
                        help="leave out the variants whose name contains WORDS (e.g. bf16; repeatable)")
    parser.add_argument("--int8-choices", action="store_true",
                        help="also the int8 quantisations the engine's was chosen from (8-bit weights; per tensor; with "
                             "convolutions), with their cosines on noise and on speech")
    parser.add_argument("--arch", action="append", choices=list(ARCH),
                        help="the architectures to measure (repeatable; default: both WavLMs)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for words in args.skip:
        for name in [n for n in VARIANTS if words in n]:
            del VARIANTS[name]
    rng = np.random.default_rng(0)
    lengths = [int(SR * s) for s in np.exp(rng.uniform(np.log(2.0), np.log(20.0), args.utts))]
    wavs = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in lengths]
    for arch in args.arch or DEFAULT_ARCHS:
        measure(arch, wavs, args)


if __name__ == "__main__":
    main()
