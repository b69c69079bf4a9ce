#!/usr/bin/env python3
"""Training and extraction throughput of the VoxCeleb configs, and the projected wall time of
their whole schedule on VoxCeleb2 on one device.

For each phase of conf/mhfa_wavlm_base_plus.yaml, conf/mhfa_wavlm_large.yaml (frozen backbone,
joint fine-tuning, large-margin) and conf/mhfa_w2vbert2.yaml (LoRA, joint, large-margin; its global
batch is for 8 GPUs: --configs "w2v-BERT 2.0" --devices 8), the phase's own settings (trainable layers, optimiser, precision,
L2-SP, crops and batch, loss, compile / activation checkpointing) on the WavLM architecture with
random weights (the same compute as the pre-trained model) + MHFA + the recipe's AAM head: steps/s,
crops/s, peak memory and GPU utilisation over --steps timed steps after --warmup. Then extraction
(stage 5's batching) in fp32 and bf16: seconds of audio per second, and the bf16 embeddings' cosine
to fp32.

What it leaves out (the output says so too): the data loader (the crops come from device memory,
so this is what one device consumes; benchmarks/loader_throughput.py measures what a loader worker
delivers, and training runs at the slower of the two), DDP (one process: no gradient all-reduce
between GPUs, which costs more the more GPUs and nodes share a step), and the trainer's work
around the step (per-step logging, DropClass/DropAdapt, validation and checkpoints).

The configs' batch sizes are global (4 GPUs in the MHFA authors' run): one device takes its share,
global / --devices crops per step. The projection: epochs x crops per epoch / crops per second,
summed over the phases, on one device and on --devices of them (that many times faster: DDP's
cost is not counted). Crops per
epoch are what our sampler draws: one per training example, i.e. per VoxCeleb2 utterance and
speed (speed perturbation makes 3 examples of each); "one crop per utterance" is the epoch of
WeSpeaker and of the MHFA authors' logs.

    python benchmarks/gpu_throughput.py --device cuda [--steps 20] [--warmup 5] [--variants compile,activation_checkpointing]
    python benchmarks/gpu_throughput.py --device cpu --small   # the same table, a small model (a dry run)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from voxadapt.config import load_config  # noqa: E402
from voxadapt.embed import embed_waveforms  # noqa: E402
from voxadapt.models.speaker import build_model  # noqa: E402
from voxadapt.train.optim import make_optimizer, param_groups, set_trainable  # noqa: E402
from voxadapt.train.regularize import L2SP  # noqa: E402
from voxadapt.train.trainer import prepare_for_phase  # noqa: E402

CONFIGS = {"WavLM Base+": "conf/mhfa_wavlm_base_plus.yaml", "WavLM Large": "conf/mhfa_wavlm_large.yaml",
           "w2v-BERT 2.0": "conf/mhfa_w2vbert2.yaml"}
# transformers' WavLMConfig defaults are the Base / Base+ shape, Wav2Vec2BertConfig's w2v-BERT 2.0's (one key
# named: a config-only model); Large:
ARCH = {"WavLM Base+": {"num_hidden_layers": 12}, "w2v-BERT 2.0": {"num_hidden_layers": 24},
        "WavLM Large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
                        "do_stable_layer_norm": True, "feat_extract_norm": "layer", "conv_bias": True}}
SMALL_ARCH = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
              "conv_dim": [32] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}
VOX2_DEV_UTTERANCES, VOX2_DEV_SPEAKERS = 1_092_009, 5_994
VOX1_UTTERANCES, VOX1_SECONDS = 153_516, 352 * 3600
LEFT_OUT = ("Not measured: the data loader (crops are generated on the device; benchmarks/loader_throughput.py "
            "gives a worker's rate, and training runs at the slower of the two), DDP (one process, no gradient "
            "all-reduce between GPUs), and the trainer's work around the step (logging, DropClass/DropAdapt, "
            "validation, checkpoints). The projected times assume none of them slows the step.")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # the process's peak so far (kB on Linux)


def gpu_utilisation(device: torch.device) -> str:
    if device.type != "cuda":
        return "-"
    try:
        return f"{torch.cuda.utilization(device)} %"
    except Exception:  # noqa: BLE001 - needs pynvml; without it, say so in the table
        return "n/a"


def measure_phase(cfg, phase, classes: int, device: torch.device, steps: int, warmup: int, small: bool,  # noqa: ANN001
                  devices: int) -> dict:
    """Timed training steps of one phase, with its settings, on random crops held on the device:
    one device's share of the global batch."""
    batch = max(1, (phase.batch_size or cfg.loader.batch_size) // devices)
    seconds = phase.crop_seconds or cfg.loader.crop_seconds
    if small:
        batch, seconds = 4, 1.0
    model, head = build_model(cfg, classes)
    set_trainable(model, head, phase.trainable_layers, phase.cnn_grad_scale, phase.train_embedding)
    model, head = prepare_for_phase(model, head, phase, cfg.train.tf32, device)
    groups = param_groups(model, head, phase)
    optimizer = make_optimizer(groups, phase, fused=phase.fused_optimizer and device.type == "cuda")
    l2sp = None
    if phase.l2sp != "none":
        reference = {k: v.detach().clone() for k, v in model.backbone.model.state_dict().items()}
        params = {k: p for k, p in model.backbone.model.named_parameters() if p.requires_grad}
        l2sp = L2SP(params, reference, phase.l2sp, phase.l2sp_weight)
    model.train()
    generator = torch.Generator(device=device).manual_seed(0)
    wav = 0.1 * torch.randn(batch, int(seconds * cfg.data.sample_rate), device=device, generator=generator)
    labels = torch.randint(0, classes, (batch,), device=device, generator=generator)
    dtype = torch.bfloat16 if phase.precision == "bf16" else torch.float16
    autocast = torch.autocast(device.type, dtype=dtype, enabled=phase.precision != "fp32")

    def step() -> None:
        with autocast:
            loss, _, _ = head(model(wav), labels, phase.margin)
        (l2sp.loss(loss) if l2sp else loss).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    elapsed = time.perf_counter() - start
    return {"batch": batch, "seconds": seconds, "steps_s": steps / elapsed, "crops_s": steps * batch / elapsed,
            "memory_gb": peak_memory_gb(device), "utilisation": gpu_utilisation(device)}


def measure_extraction(cfg, device: torch.device, utterances: int, small: bool) -> dict:  # noqa: ANN001
    """Stage 5's batching over utterances of VoxCeleb1-like lengths (4-20 s, mean about 8 s)."""
    model, _ = build_model(cfg, 2)
    model = model.to(device).eval()
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.gamma(4.0, 2.05, utterances), 4.0, 20.0) * (0.25 if small else 1.0)
    wavs = [0.1 * rng.standard_normal(int(s * cfg.data.sample_rate)).astype(np.float32) for s in lengths]
    out = {}
    for precision in ("fp32", "bf16"):
        opts = dataclasses.replace(cfg.extract, precision=precision, vad=False)
        embed_waveforms(model, wavs[:2], cfg.data.sample_rate, opts, str(device))  # warm-up
        synchronize(device)
        start = time.perf_counter()
        out[precision] = embed_waveforms(model, wavs, cfg.data.sample_rate, opts, str(device))
        synchronize(device)
        out[f"{precision}_rate"] = float(lengths.sum()) / (time.perf_counter() - start)
    a, b = out["fp32"], out["bf16"]
    out["cosine_min"] = float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())
    return out


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="a small model, batch 4 x 1 s: the table on a CPU")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--devices", type=int, default=4, help="GPUs the configs' global batch is split over "
                        "(the configs are the authors' 4-GPU run); also the second projection column")
    parser.add_argument("--utterances", type=int, default=400, help="utterances embedded per extraction row")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: " + ", ".join(CONFIGS))
    parser.add_argument("--variants", default="", help="comma-separated phase options also measured, each on its "
                        "own row (not in the projection): compile, activation_checkpointing, no_fused_optimizer")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {name}; torch {torch.__version__}; {time.strftime('%Y-%m-%d')}; "
          f"{'small model (a dry run, not the real architecture)' if args.small else 'real architectures, random weights'}\n")
    rows, projection, extraction = [], [], []
    for label in args.configs.split(","):
        arch = SMALL_ARCH if args.small else ARCH[label]
        cfg = load_config(ROOT / CONFIGS[label], [f"model.backbone.arch={json.dumps(arch)}"])
        classes = (50 if args.small else VOX2_DEV_SPEAKERS) * (3 if cfg.augment.speed_perturb else 1)
        examples = VOX2_DEV_UTTERANCES * (3 if cfg.augment.speed_perturb else 1)
        total = total_per_utt = 0.0
        for phase in [*cfg.train.phases, *cfg.adapt.phases]:
            r = measure_phase(cfg, phase, classes, device, args.steps, args.warmup, args.small, args.devices)
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the phase's model and optimiser are gone: give their memory back
            per_epoch = (cfg.loader.batches_per_epoch * r["batch"] * args.devices) if cfg.loader.batches_per_epoch else examples
            phase_time = phase.epochs * per_epoch / r["crops_s"]
            total += phase_time
            total_per_utt += phase.epochs * VOX2_DEV_UTTERANCES / r["crops_s"]
            rows.append(f"| {label} | {phase.name} ({phase.precision}, trainable {phase.trainable_layers}) | "
                        f"{r['batch']} x {r['seconds']:g} s | {r['steps_s']:.2f} | {r['crops_s']:.0f} | "
                        f"{r['memory_gb']:.1f} | {r['utilisation']} | {phase.epochs} x {per_epoch:,} crops: "
                        f"{hours(phase_time)} |")
            for variant in filter(None, args.variants.split(",")):
                change = {"fused_optimizer": False} if variant == "no_fused_optimizer" else {variant: True}
                if variant == "compile" and phase.layerdrop:  # refused with layerdrop (a recompilation per drop pattern)
                    change["layerdrop"] = 0.0
                    variant += ", layerdrop 0"
                changed = dataclasses.replace(phase, **change)
                v = measure_phase(cfg, changed, classes, device, args.steps, args.warmup, args.small, args.devices)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                rows.append(f"| {label} | {phase.name} + {variant} | {v['batch']} x {v['seconds']:g} s | "
                            f"{v['steps_s']:.2f} | {v['crops_s']:.0f} | {v['memory_gb']:.1f} | {v['utilisation']} | "
                            f"{v['crops_s'] / r['crops_s']:.2f}x the row above |")
        projection.append(f"| {label} | {classes:,} classes, {examples:,} examples | {hours(total)} | "
                          f"{hours(total / args.devices)} | {hours(total_per_utt)} |")
        r = measure_extraction(cfg, device, args.utterances, args.small)
        extraction.append(f"| {label} | {r['fp32_rate']:.0f} | {r['bf16_rate']:.0f} | {r['cosine_min']:.5f} | "
                          f"{hours(VOX1_SECONDS / r['fp32_rate'])} / {hours(VOX1_SECONDS / r['bf16_rate'])} |")
    print("| model | phase | crops per step | steps/s | crops/s | peak memory (GB) | GPU utilisation | projected phase time |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\n| model | VoxCeleb2 dev | whole schedule, one device | on {args.devices} devices (no DDP cost) | "
          "whole schedule, one crop per utterance per epoch, one device |")
    print("|---|---|---|---|---|")
    print("\n".join(projection))
    print(f"\n| model | extraction fp32 (audio s/s) | bf16 (audio s/s) | min cosine bf16 to fp32 | VoxCeleb1 "
          f"({VOX1_UTTERANCES:,} utterances, 352 h): fp32 / bf16 |")
    print("|---|---|---|---|---|")
    print("\n".join(extraction))
    print(f"\n{LEFT_OUT}")
    if device.type == "cpu":
        print("\nOn a CPU, extraction is always fp32: the bf16 column repeats it.")


if __name__ == "__main__":
    main()
