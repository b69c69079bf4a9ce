#!/usr/bin/env python3
"""Training-step cost on the WavLM Base+ or w2v-BERT 2.0 architecture (random init: the real
model's compute; --backbone).

Each variant runs in its own process (so its peak RSS is its own): one warm-up step, then
--steps timed steps of forward + backward + AdamW update on a batch of --batch x --seconds s.
Variants alternate over --rounds rounds (a shared VM's speed drifts; interleaving keeps the
ratios fair); the table shows the median step time over all rounds and the largest peak RSS.
Rows marked "before" run the adapters with F.linear on strided inputs, as before
backbone.ContiguousLinearInputs (the old code path, side by side in the same run).
    python benchmarks/training_efficiency.py [--backbone wavlm|w2v-bert] [--batch 8] [--seconds 3] [--steps 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from torch.overrides import TorchFunctionMode

# transformers' defaults are WavLM Base+'s and w2v-BERT 2.0's shapes; one key named makes it a config-only model.
ARCH = {"wavlm": '{"num_hidden_layers": 12}', "w2v-bert": '{"num_hidden_layers": 24}'}
ADAPTERS = ["model.adapters.inner=true", "model.adapters.inter=true", "model.adapters.bottleneck=64"]
# name -> (pooling, trainable_layers, extra config overrides, strided linear inputs as before the fix)
VARIANTS = {
    "MHFA, frozen backbone": ("mhfa", 0, [], False),
    "MHFA, full fine-tuning": ("mhfa", -1, [], False),
    "weighted sum + ASP, frozen backbone": ("wsasp", 0, [], False),
    "Inner + Inter adapters (r = 64) + MHFA, before": ("mhfa", 0, ADAPTERS, True),
    "Inner + Inter adapters (r = 64) + MHFA": ("mhfa", 0, ADAPTERS, False),
    "LoRA q/v (rank 8) + MHFA, before": ("mhfa", 0, ["model.adapters.lora=true"], True),
    "LoRA q/v (rank 8) + MHFA": ("mhfa", 0, ["model.adapters.lora=true"], False),
}


class PlainInputs(TorchFunctionMode):
    """Stands in for backbone.ContiguousLinearInputs: the code path before it existed."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        return func(*args, **(kwargs or {}))


def run_variant(name: str, args: argparse.Namespace) -> dict:
    import torch

    from voxadapt.config import load_config
    from voxadapt.models.speaker import build_model
    from voxadapt.train.optim import make_optimizer, param_groups, set_trainable

    pooling, layers, extra, before = VARIANTS[name]
    if before:
        import voxadapt.models.backbone

        voxadapt.models.backbone.ContiguousLinearInputs = PlainInputs
    cfg = load_config(None, [f"model.pooling.type={pooling}", f"model.backbone.type={args.backbone}",
                             f"model.backbone.arch={ARCH[args.backbone]}",
                             f"train.phases.0.trainable_layers={layers}", "train.phases.0.backbone_lr=2e-5", *extra])
    model, head = build_model(cfg, 5994)  # VoxCeleb2's speaker count: the real head size
    set_trainable(model, head, layers)
    phase = cfg.train.phases[0]
    groups = param_groups(model, head, phase)
    opt = make_optimizer(groups, phase)
    model.train()
    if model.backbone_frozen:
        model.backbone.eval()
    trainable = sum(p.numel() for g in groups for p in g.params)
    total = sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in head.parameters())
    in_model = trainable - sum(p.numel() for p in head.parameters())  # the class matrix is dropped after training
    wav = torch.randn(args.batch, int(args.seconds * 16000))
    labels = torch.randint(0, 5994, (args.batch,))
    times = []
    for i in range(args.steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss, _, _ = head(model(wav), labels, 0.2)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - start)
    return {"times": times, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "trainable": trainable, "total": total, "in_model": in_model,
            "model_total": sum(p.numel() for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=list(ARCH), default="wavlm")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--skip", action="append", default=[], metavar="WORDS",
                        help="leave out the variants whose name contains WORDS (repeatable)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args)))
        return
    results: dict[str, dict] = {}
    names = [n for n in VARIANTS if not any(words in n for words in args.skip)]
    for _ in range(args.rounds):
        for name in names:
            out = subprocess.run([sys.executable, __file__, "--variant", name, "--backbone", args.backbone, "--batch",
                                  str(args.batch), "--seconds", str(args.seconds), "--steps", str(args.steps),
                                  "--precision", args.precision],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if name in results:
                r["times"] += results[name]["times"]
                r["peak_rss_mb"] = max(r["peak_rss_mb"], results[name]["peak_rss_mb"])
            results[name] = r
    for r in results.values():
        r["step_s"] = statistics.median(r["times"])
    import torch

    full = results["MHFA, full fine-tuning"]
    print(f"Backbone: {args.backbone} ({full['model_total'] / 1e6:.1f} M parameters with MHFA). "
          f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch} x {args.seconds:g} s, "
          f"{args.precision}; median of {args.rounds} rounds x {args.steps} steps (each after a warm-up step); "
          "AAM head for 5,994 classes\n")
    print("| variant | s / step | x full FT | peak RSS (MB) | x full FT | trained params (with head) | "
          "share of the speaker model (head excluded) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['step_s']:.2f} | {r['step_s'] / full['step_s']:.2f} | {r['peak_rss_mb']:.0f} | "
              f"{r['peak_rss_mb'] / full['peak_rss_mb']:.2f} | {r['trainable'] / 1e6:.2f} M | "
              f"{100 * r['in_model'] / r['model_total']:.2f}% |")


if __name__ == "__main__":
    main()
