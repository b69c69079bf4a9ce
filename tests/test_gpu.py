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


@pytest.mark.parametrize("cpu_paths", [True, False], ids=["cpu-paths", "gpu-paths"])
def test_activation_checkpointing_recomputes_layers_and_changes_no_gradient(cpu_paths, monkeypatch):
    """Each transformer layer's insides run twice per step (forward, then again in the backward
    pass) and the loss and every gradient equal the plain run's (dropout masks replayed from the
    RNG, the recomputation under the forward pass's input mode: ContiguousLinearInputs on the CPU
    paths, none on the GPU paths, forced here on a CPU)."""
    import voxadapt.models.backbone as backbone

    monkeypatch.setattr(backbone, "cpu_tuned", lambda _device: cpu_paths)

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


def test_gpu_paths_batch_the_cnn_and_skip_the_cpu_mode_with_the_same_result(monkeypatch):
    """A GPU runs equal-length crops through the CNN in one call (GroupNorm normalises each example
    over its own time axis) and never enters the CPU-only ContiguousLinearInputs mode; forced on a
    CPU, every hidden state equals the CPU paths' (one utterance at a time, the mode on). Unequal
    lengths still go one at a time: GroupNorm must not see padding."""
    import voxadapt.models.backbone as backbone

    assert backbone.cpu_tuned(torch.device("cpu")) and not backbone.cpu_tuned(torch.device("cuda", 1))
    entered = []

    class Spy(backbone.ContiguousLinearInputs):
        def __enter__(self):  # noqa: ANN204
            entered.append(1)
            return super().__enter__()

    monkeypatch.setattr(backbone, "ContiguousLinearInputs", Spy)
    model, _ = build_model(load_config(None, MICRO), 5)
    model.eval()
    cnn_batches: list[int] = []
    model.backbone.model.feature_extractor.register_forward_hook(lambda _m, args, _o: cnn_batches.append(len(args[0])))
    wav = torch.randn(3, 16000, generator=torch.Generator().manual_seed(1))

    def run(gpu: bool, lengths: torch.Tensor | None = None) -> tuple[list[torch.Tensor], list[int], int]:
        monkeypatch.setattr(backbone, "cpu_tuned", lambda _device: not gpu)
        cnn_batches.clear()
        entered.clear()
        with torch.no_grad():
            states, _ = model.backbone(wav, lengths)
        return states, list(cnn_batches), len(entered)

    cpu, gpu = run(False), run(True)
    assert cpu[1:] == ([1, 1, 1], 1), "CPU paths: the CNN once per utterance, the contiguous-input mode on"
    assert gpu[1:] == ([3], 0), "GPU paths: the CNN once for the batch, the contiguous-input mode off"
    assert len(cpu[0]) == len(gpu[0]) == 3
    for a, b in zip(cpu[0], gpu[0]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert run(True, torch.tensor([12000, 12000, 12000]))[1] == [3]
    assert run(True, torch.tensor([16000, 12000, 16000]))[1] == [1, 1, 1]


@pytest.mark.slow
def test_loader_workers_persist_across_epochs_and_restarts(tiny_data, tmp_path, monkeypatch):
    """One loader per phase: every batch of both epochs, and of the restarts after each DropClass
    draw, comes from the same worker process (none forked per epoch), and the steps get exactly
    the batches of a run without workers: the same crops and labels, the audio equal to float
    rounding (a worker computes the augmentation with one thread, this process with several)."""
    from voxadapt.data.dataset import CropBatchDataset
    from voxadapt.layout import DataLayout, ExpLayout
    from voxadapt.train.distributed import init_distributed
    from voxadapt.train.trainer import PhaseTrainer

    pids = tmp_path / "pids"
    make_batch, real_step = CropBatchDataset.__getitem__, PhaseTrainer._train_step
    seen: list[tuple[list[int], np.ndarray]] = []

    def recorded(self, spec):  # noqa: ANN001, ANN202 - runs in the worker process
        with open(pids, "a") as f:
            f.write(f"{os.getpid()}\n")
        return make_batch(self, spec)

    def step(self, batch, *args):  # noqa: ANN001, ANN202
        seen.append((batch["label"].tolist(), batch["wav"].numpy().copy()))
        return real_step(self, batch, *args)

    monkeypatch.setattr(CropBatchDataset, "__getitem__", recorded)
    monkeypatch.setattr(PhaseTrainer, "_train_step", step)
    phase = ["loader.batches_per_epoch=5", "train.phases.0.dropclass.drop=20", "train.phases.0.dropclass.every_steps=3"]

    def train(workers: int) -> list[tuple[list[int], np.ndarray]]:
        cfg = load_config(None, MICRO + phase + [f"loader.num_workers={workers}"])
        trainer = PhaseTrainer(cfg, cfg.train.phases[0], 0, DataLayout(tiny_data), ExpLayout(tmp_path / f"w{workers}"),
                               None, init_distributed("cpu"))
        seen.clear()
        trainer.run()
        return list(seen)

    with_workers = train(1)
    used = pids.read_text().split()
    assert len(used) >= 10, used  # 2 epochs x 5 batches, and prefetched batches a restart dropped
    assert len(set(used)) == 1 and used[0] != str(os.getpid()), f"batches made by processes {sorted(set(used))}"
    without = train(0)
    assert len(with_workers) == len(without) == 10
    for (labels, wav), (labels0, wav0) in zip(with_workers, without):
        assert labels == labels0, "the steps got other batches with persistent workers"
        np.testing.assert_allclose(wav, wav0, rtol=1e-4, atol=1e-6)  # other crops would differ by ~0.1


class _SlowAfterFirst(torch.utils.data.Dataset):
    """The first batch at once, every later one after a minute: a worker busy when the run ends."""

    def __getitem__(self, index: int) -> dict:
        if index > 0:
            time.sleep(60)
        return {"x": torch.tensor(index)}


def test_stop_workers_ends_a_busy_worker_that_ignores_sigterm():
    """A finished run must not wait on a training worker: they ignore SIGTERM (torch's fallback
    when one does not answer its shutdown), so `stop_workers` kills what is still running. Without
    the kill the worker below lives on for its minute and the process's exit waits for it."""
    from voxadapt.data.dataset import make_loader, stop_workers
    from voxadapt.train.interrupt import ignore_stop_signals_in_workers

    loader = make_loader(_SlowAfterFirst(), range(8), 1, worker_init_fn=ignore_stop_signals_in_workers)
    assert next(iter(loader))["x"] == 0  # the worker is now making the next (slow) batches
    workers = list(loader._iterator._workers)
    started = time.monotonic()
    stop_workers(loader)
    assert not any(w.is_alive() for w in workers), "a worker outlived stop_workers"
    assert time.monotonic() - started < 30
    assert loader._iterator is None
    stop_workers(loader)  # a second call (a loader that never started, or already stopped) is a no-op


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
    for row in ("| WavLM Base+ | frozen (fp32, trainable 0) |", "| WavLM Base+ | joint (fp32, trainable -1) |",
                "| WavLM Base+ | large_margin", "| WavLM Base+ | joint + activation_checkpointing |",
                "10 x 1,092,009 crops", "whole schedule, one device", "on 4 devices", "VoxCeleb1 (153,516 utterances",
                "Not measured: the data loader", "DDP (one process"):
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
    args = ["python", "-m", "voxadapt.stages", "train", *set_args(MICRO + GPU), "--data", str(tiny_data), "--exp", str(exp)]
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


needs_two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")


@needs_two_gpus
def test_a_2_gpu_nccl_run_signalled_mid_epoch_saves_and_resumes(tiny_data, tmp_path):
    """scancel on two GPUs: NCCL ranks, loader workers, DropClass over the global batch's classes and
    the class + distillation tokens; SIGTERM to every process group mid-epoch (test_preemption's
    run, on the GPUs): both ranks save at one step, rank 1 waits for rank 0's write, and the resumed
    run ends at the uninterrupted run's weights within GPU rounding."""
    from test_preemption import overrides, signal_then_resume

    from voxadapt.config import load_config as load
    from voxadapt.data.examples import ExampleTable
    from voxadapt.layout import DataLayout
    from voxadapt.models.speaker import save_model_dir

    cfg = load(None, MICRO)
    classes = ExampleTable.from_manifest(DataLayout(tiny_data).cuts(cfg.data.sets.train), cfg.data.sample_rate,
                                         cfg.augment.speeds if cfg.augment.speed_perturb else []).classes
    save_model_dir(tmp_path / "teacher", cfg, *build_model(cfg, len(classes)), classes)
    (tmp_path / "run").mkdir()
    signal_then_resume(tiny_data, overrides(tmp_path / "teacher") + ["train.device=cuda"], tmp_path / "run", exact=False)


@needs_two_gpus
def test_rank_0_work_longer_than_the_nccl_timeout(tiny_data, tmp_path):
    """NCCL's watchdog, not only gloo's: rank 0's first validation sleeps 6 s, the collective timeout
    is 3 s, and the run still finishes (the other rank waits outside any collective)."""
    from test_ddp import PROBE, torchrun

    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "probes").mkdir()
    over = MICRO + ["train.device=cuda", "loader.batches_per_epoch=3", "train.collective_timeout_s=3"]
    proc = torchrun(2, tiny_data, tmp_path / "exp", over, tmp_path / "probe.py",
                    {"PROBE_DIR": str(tmp_path / "probes"), "SLOW_VALIDATION_S": "6"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "validation EER" in proc.stderr and (tmp_path / "exp" / "mhfa_tiny" / "main" / "done.json").is_file()


@needs_cuda
def test_bf16_aam_head_gives_fp32_logits_and_finite_gradients_near_cosine_1():
    """Embeddings within cosine ~0.99995 of their class weights: in bf16 the cosine would round to
    1.0 and sqrt(1 - cos^2)'s backward give 0/0. Under bf16 autocast on the GPU the head's logits
    are fp32, every gradient is finite, and loss and cosines are within 1e-3 of fp32's."""
    from voxadapt.models.aam import AAMSoftmax

    torch.manual_seed(0)
    head = AAMSoftmax(256, 50, scale=32.0).cuda()
    labels = torch.arange(8, device="cuda")
    target = head.weight.detach()[labels]
    base = target + 1e-2 * target.norm(dim=1, keepdim=True) / 16 * torch.randn_like(target)

    def run(bf16: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        head.zero_grad()
        emb = base.clone().requires_grad_(True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss, logits, _ = head(emb, labels, 0.2)
        loss.backward()
        return loss.detach(), logits.detach(), emb.grad, head.weight.grad.clone()

    cosine = torch.nn.functional.cosine_similarity(base, target)
    assert cosine.min() > 0.9999 and (cosine.to(torch.bfloat16) == 1).all()  # what bf16 cannot tell from 1
    fp32, bf16 = run(False), run(True)
    assert bf16[1].dtype == torch.float32, f"bf16 autocast gave {bf16[1].dtype} logits; the head must compute in fp32"
    assert torch.isfinite(bf16[2]).all(), "non-finite embedding gradient from the bf16 head near cos = 1"
    assert torch.isfinite(bf16[3]).all(), "non-finite head-weight gradient from the bf16 head near cos = 1"
    torch.testing.assert_close(bf16[0], fp32[0], rtol=1e-3, atol=1e-3, msg="bf16 loss differs from fp32's")
    torch.testing.assert_close(bf16[1] / 32, fp32[1] / 32, rtol=0, atol=1e-3, msg="bf16 cosines differ from fp32's")


@needs_cuda
def test_training_steps_make_no_host_sync(tiny_data, tmp_path, monkeypatch, caplog):
    """In the training loop on the GPU (bf16, the fused optimiser), a step waits for the device
    nowhere, not even one with a NaN loss, which the optimiser skips on the device, nor the softmax
    over the batch's classes (taken from the CPU labels): under
    torch.cuda.set_sync_debug_mode("error") any .item(), float() or int() of a device tensor or
    data-dependent shape in a step raises. (The host reads the device at the syncs between steps.)"""
    import logging

    from voxadapt.layout import DataLayout, ExpLayout
    from voxadapt.train import trainer as trainer_mod
    from voxadapt.train.distributed import init_distributed

    cfg = load_config(None, MICRO + GPU + ["train.phases.0.precision=bf16", "train.phases.0.epochs=1",
                                           "train.phases.0.average_last=1", "loader.batches_per_epoch=6",
                                           "train.phases.0.dropclass.batch_classes_only=true"])
    trainer = trainer_mod.PhaseTrainer(cfg, cfg.train.phases[0], 0, DataLayout(tiny_data), ExpLayout(tmp_path), None,
                                       init_distributed("cuda"))
    real_step, real_forward = trainer_mod.PhaseTrainer._train_step, trainer_mod.TrainModule.forward
    nan_step, head = 3, []  # the head's weight before and after each step

    def step(self, batch, margin, step):  # noqa: ANN001, ANN202
        if step >= 2:  # after warm-up: lazy initialisation (cuBLAS handles, optimiser state) may sync once
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        head.append(self.head.weight.detach().clone())
        try:
            return real_step(self, batch, margin, step)
        except RuntimeError as err:
            pytest.fail(f"training step {step + 1} synchronised with the GPU: {err}")
        finally:
            torch.cuda.set_sync_debug_mode("default")
            head.append(self.head.weight.detach().clone())

    def forward(self, *args):  # noqa: ANN001, ANN202
        loss, logits, targets = real_forward(self, *args)
        return (loss * float("nan") if len(head) == 2 * nan_step + 1 else loss), logits, targets

    monkeypatch.setattr(trainer_mod.PhaseTrainer, "_train_step", step)
    monkeypatch.setattr(trainer_mod.TrainModule, "forward", forward)
    with caplog.at_level(logging.WARNING):
        trainer.run()
    assert trainer.skip_on_device and len(head) == 2 * 6
    assert torch.equal(head[2 * nan_step], head[2 * nan_step + 1])  # skipped on the device
    assert not torch.equal(head[2 * nan_step + 2], head[2 * nan_step + 3])  # the next step learns
    assert f"step {nan_step + 1}: non-finite loss or gradient norm; step skipped" in caplog.text


@needs_cuda
def test_compile_and_activation_checkpointing_train_like_eager():
    """Three optimiser steps of the micro model on the GPU: torch.compile, and compile with
    activation checkpointing, give eager's losses (no dropout: compiled kernels draw their masks
    from another generator; TF32 off, so only the kernels differ)."""
    import dataclasses

    from voxadapt.train.optim import make_optimizer, param_groups
    from voxadapt.train.trainer import prepare_for_phase

    cfg = load_config(None, MICRO + GPU + ["train.tf32=false"])
    dev = torch.device("cuda")
    wav = (0.1 * torch.randn(4, 16000, generator=torch.Generator().manual_seed(1))).to(dev)
    labels = torch.tensor([0, 3, 5, 7], device=dev)

    def losses(**options: bool) -> list[float]:
        phase = dataclasses.replace(cfg.train.phases[0], **options)
        torch.manual_seed(0)  # the same head initialisation
        model, head = build_model(cfg, 12)
        set_trainable(model, head, phase.trainable_layers)
        model, head = prepare_for_phase(model, head, phase, cfg.train.tf32, dev)
        optimizer = make_optimizer(param_groups(model, head, phase), phase, fused=phase.fused_optimizer)
        model.eval()
        out = []
        for _ in range(3):
            loss, _, _ = head(model(wav), labels, phase.margin)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            out.append(loss.item())
        return out

    eager = losses()
    assert np.isfinite(eager).all(), eager
    for options in ({"compile": True}, {"compile": True, "activation_checkpointing": True}):
        got = losses(**options)
        np.testing.assert_allclose(got, eager, rtol=2e-3, err_msg=f"{options} trains differently from eager")
