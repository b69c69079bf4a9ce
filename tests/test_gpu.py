"""The GPU path: speed options that must not change the maths (checked on CPU), the throughput
benchmark's dry run, and what only a CUDA device can show (skipped without one)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import MICRO, ROOT, kill_group, set_args, start_killable

from voxadapt.config import load_config
from voxadapt.data.dataset import loader_workers
from voxadapt.models.speaker import build_model
from voxadapt.train.optim import set_trainable

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_activation_checkpointing_recomputes_layers_and_changes_no_gradient():
    """Each transformer layer's insides run twice per step (forward, then again in the backward
    pass) and the loss and every gradient equal the plain run's (dropout masks replayed from the
    RNG, the contiguous-input mode entered for the recomputation too)."""
    def run(checkpointing: bool) -> tuple[torch.Tensor, list[torch.Tensor], int]:
        model, head = build_model(load_config(None, MICRO), 5)
        set_trainable(model, head, -1)
        if checkpointing:
            model.backbone.enable_activation_checkpointing()
        calls = []
        model.backbone.layers[0].feed_forward.register_forward_hook(lambda *_: calls.append(1))
        model.train()
        torch.manual_seed(0)
        loss, _, _ = head(model(torch.randn(2, 16000, generator=torch.Generator().manual_seed(1))), torch.tensor([1, 3]), 0.2)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None], len(calls)

    plain, checkpointed = run(False), run(True)
    assert (plain[2], checkpointed[2]) == (1, 2)
    torch.testing.assert_close(plain[0], checkpointed[0], rtol=1e-5, atol=1e-6)
    assert len(plain[1]) == len(checkpointed[1]) > 0
    for a, b in zip(plain[1], checkpointed[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_loader_workers_auto_share_the_cores(monkeypatch):
    monkeypatch.setattr("voxadapt.data.dataset.usable_cores", lambda: 16)
    assert loader_workers(3) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert loader_workers(-1) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert loader_workers(-1) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert loader_workers(-1) == 0


def test_throughput_benchmark_dry_run_prints_the_tables():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_throughput.py"), "--device", "cpu", "--small",
                           "--steps", "1", "--warmup", "1", "--utterances", "4", "--configs", "WavLM Base+",
                           "--variants", "activation_checkpointing"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("| WavLM Base+ | frozen (bf16, trainable 0) |", "| WavLM Base+ | joint (bf16, trainable -1) |",
                "| WavLM Base+ | large_margin", "| WavLM Base+ | joint + activation_checkpointing |",
                "10 x 3,276,027 crops", "whole schedule", "VoxCeleb1 (153,516 utterances"):
        assert row in proc.stdout, proc.stdout


# ------------------------------------------------------------------------- on a CUDA device only

GPU = ["train.device=cuda", "extract.device=cuda"]


@needs_cuda
def test_bf16_extraction_stays_within_cosine_0_9999():
    import dataclasses

    from voxadapt.embed import embed_waveforms

    cfg = load_config(None, MICRO)
    model, _ = build_model(cfg, 5)
    model = model.cuda().eval()
    rng = np.random.default_rng(0)
    wavs = [0.1 * rng.standard_normal(int(s * 16000)).astype(np.float32) for s in rng.uniform(4, 20, 24)]
    a = embed_waveforms(model, wavs, 16000, dataclasses.replace(cfg.extract, precision="fp32"), "cuda")
    b = embed_waveforms(model, wavs, 16000, dataclasses.replace(cfg.extract, precision="bf16"), "cuda")
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.9999, cosine.min()


@needs_cuda
def test_the_micro_pipeline_on_the_gpu_scores_like_the_cpu_run(micro_pipeline, tmp_path):
    import json

    from helpers import run_stages

    from voxadapt.config import dump_yaml

    root = tmp_path / "gpu"
    root.mkdir()
    cpu_cfg = load_config(micro_pipeline / "cfg.yaml")
    (root / "cfg.yaml").write_text(dump_yaml(load_config(micro_pipeline / "cfg.yaml", GPU)))
    proc = run_stages(root, 0, 7)
    assert proc.returncode == 0, proc.stderr[-3000:]
    gpu = json.loads((root / "exp" / cpu_cfg.name / "results.json").read_text())
    cpu = json.loads((micro_pipeline / "exp" / cpu_cfg.name / "results.json").read_text())
    for method in cpu["test"]:  # 20 test speakers: equal within a few points of EER
        assert abs(gpu["test"][method]["eer"] - cpu["test"][method]["eer"]) < 0.05, method


@needs_cuda
def test_training_on_the_gpu_resumes_after_a_kill(tiny_data, tmp_path):
    exp = tmp_path / "exp"
    args = ["python", str(ROOT / "pyscripts" / "train.py"), *set_args(MICRO + GPU), "--data", str(tiny_data), "--exp", str(exp)]
    proc = start_killable(args, ROOT, {"PYTHONPATH": str(ROOT)})
    deadline = time.time() + 300
    while time.time() < deadline and not (exp / "mhfa_tiny" / "main" / "checkpoints" / "ckpt-000000006.pt").exists():
        time.sleep(0.02)
    kill_group(proc)
    assert not (exp / "mhfa_tiny" / "main" / "done.json").exists()
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=900)
    assert done.returncode == 0 and "resuming from ckpt-" in done.stderr, done.stderr[-2000:]
    assert (exp / "mhfa_tiny" / "main" / "done.json").is_file()
