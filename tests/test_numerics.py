"""Numerics of training: the AAM head and distillation logits under bf16 autocast, the guard
against non-finite steps, checkpoints without NaN, and configs that could never train."""

from __future__ import annotations

import logging

import pytest
import torch
from helpers import MICRO, assert_clean_error, run_step, set_args
from torch import nn

from voxadapt.config import load_config
from voxadapt.errors import VoxadaptError
from voxadapt.layout import DataLayout, ExpLayout
from voxadapt.models.aam import AAMSoftmax
from voxadapt.train import checkpoint as ckpt_io


def _near_centre(head: AAMSoftmax, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings a hair from their class's centre (cosine ~1 - 1e-7), and their labels."""
    labels = torch.arange(n) % head.num_classes
    emb = head.weight.detach()[labels] * 3.0 + 1e-4 * torch.randn(n, head.weight.shape[1])
    return emb.requires_grad_(True), labels


def test_aam_head_under_bf16_autocast_is_fp32_and_has_finite_gradients_near_cos_1():
    torch.manual_seed(0)
    head = AAMSoftmax(64, 10, scale=32.0)
    emb, labels = _near_centre(head, 8)
    results = {}
    for autocast in (False, True):
        head.zero_grad()
        emb.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss, logits, _ = head(emb, labels, margin=0.2)
        loss.backward()
        results[autocast] = (loss.detach(), logits.detach(), emb.grad.clone(), head.weight.grad.clone())
    loss, logits, emb_grad, weight_grad = results[True]
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32
    assert torch.isfinite(emb_grad).all() and torch.isfinite(weight_grad).all()
    ref_loss, ref_logits, ref_emb_grad, ref_weight_grad = results[False]
    assert (logits / head.scale - ref_logits / head.scale).abs().max() < 1e-3
    assert abs(float(loss - ref_loss)) < 1e-3
    assert torch.allclose(emb_grad, ref_emb_grad, atol=1e-3) and torch.allclose(weight_grad, ref_weight_grad, atol=1e-3)


def test_aam_gradient_is_finite_at_cos_exactly_1():
    # A non-target class whose centre coincides with the embedding: sqrt(1 - cos^2) at 0.
    head = AAMSoftmax(4, 2, scale=10.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
    emb = torch.tensor([[0.0, 2.0, 0, 0]], requires_grad=True)
    loss, _, _ = head(emb, torch.tensor([0]), margin=0.2)
    loss.backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()


def test_distillation_logits_are_fp32_under_bf16_autocast(monkeypatch):
    from voxadapt.train import distill

    torch.manual_seed(0)
    d = distill.Distiller.__new__(distill.Distiller)  # the teacher stands in: no trained model needed here
    nn.Module.__init__(d)
    d.teacher, d.teacher_head = nn.Linear(16, 64), AAMSoftmax(64, 6, scale=32.0)
    d.head, d.weight, d.temperature = nn.Linear(64, 6), 1.0, 2.0
    seen = []
    real_kd = distill.kd_loss
    monkeypatch.setattr(distill, "kd_loss", lambda s, t, temp: seen.append((s.dtype, t.dtype)) or real_kd(s, t, temp))
    wav, distill_emb = torch.randn(4, 16), torch.randn(4, 64)
    ref = d.loss(wav, distill_emb, None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = d.loss(wav, distill_emb, None)
    assert seen[-1] == (torch.float32, torch.float32) and got.dtype == torch.float32
    assert abs(float(got.detach() - ref.detach())) < 1e-3


def test_distill_token_without_teacher_is_a_config_error(tmp_path):
    over = MICRO + ["model.backend.type=clstoken", "model.backend.distill_token=true"]
    with pytest.raises(Exception, match="distill_token needs distill.teacher"):
        load_config(None, over)
    proc = run_step("train", *set_args(over), "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"))
    assert_clean_error(proc, "backend.distill_token needs distill.teacher")


def test_a_checkpoint_with_nan_weights_is_never_written(tmp_path):
    content = {"model": {"w": torch.tensor([1.0, float("nan")])}, "head": {"weight": torch.ones(2)}}
    with pytest.raises(VoxadaptError, match="model weight w is not finite; no checkpoint written"):
        ckpt_io.save_checkpoint(tmp_path, 7, content)
    assert list(tmp_path.iterdir()) == []


def _trainer(tiny_data, tmp_path, extra: list[str]):  # noqa: ANN202
    from voxadapt.train.distributed import init_distributed
    from voxadapt.train.trainer import PhaseTrainer

    cfg = load_config(None, MICRO + ["train.phases.0.epochs=1", "train.phases.0.average_last=1",
                                     "loader.batches_per_epoch=5", *extra])
    return PhaseTrainer(cfg, cfg.train.phases[0], 0, DataLayout(tiny_data), ExpLayout(tmp_path), None,
                        init_distributed("cpu"))


def _fused_on_cpu(monkeypatch) -> None:  # noqa: ANN001
    """The trainer's optimiser fused on the CPU too, so a CPU run takes the GPU's path: a non-finite step
    skipped on the device (the optimiser's found_inf), no host read in a step."""
    from voxadapt.train import optim
    from voxadapt.train import trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "make_optimizer", lambda groups, phase, fused=False: optim.make_optimizer(groups, phase, True))


def _inject_nan(monkeypatch, bad_steps: set[int] | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The loss of the steps in `bad_steps` (all if None) made NaN; (head weight before, after) per step."""
    from voxadapt.train import trainer as trainer_mod

    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    state = {"bad": False}
    real_step, real_forward = trainer_mod.PhaseTrainer._train_step, trainer_mod.TrainModule.forward

    def step(self, batch, margin, *rest):  # noqa: ANN001, ANN202
        state["bad"] = bad_steps is None or len(calls) in bad_steps
        before = self.head.weight.detach().clone()
        calls.append((before, before))
        out = real_step(self, batch, margin, *rest)
        calls[-1] = (before, self.head.weight.detach().clone())
        return out

    def forward(self, *args):  # noqa: ANN001, ANN202
        loss, logits, targets = real_forward(self, *args)
        return (loss * float("nan") if state["bad"] else loss), logits, targets

    monkeypatch.setattr(trainer_mod.PhaseTrainer, "_train_step", step)
    monkeypatch.setattr(trainer_mod.TrainModule, "forward", forward)
    return calls


@pytest.mark.slow
@pytest.mark.parametrize("on_device", [False, True], ids=["host", "device"])
def test_a_non_finite_step_is_skipped_and_logged(tiny_data, tmp_path, monkeypatch, caplog, on_device):
    calls = _inject_nan(monkeypatch, {2})
    if on_device:
        _fused_on_cpu(monkeypatch)
    trainer = _trainer(tiny_data, tmp_path, [])
    with caplog.at_level(logging.WARNING):
        final = trainer.run()
    assert trainer.skip_on_device == on_device
    assert len(calls) == 5
    for i, (before, after) in enumerate(calls):
        assert torch.isfinite(after).all()
        if i:  # (step 1 has lr 0: the warm-up's start)
            assert torch.equal(before, after) == (i == 2), i  # no update from the NaN step, the others learn
    assert "step 3: non-finite loss or gradient norm; step skipped (1 in a row" in caplog.text
    assert trainer.nonfinite_run == 0 and (final / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("on_device", [False, True], ids=["host", "device"])
def test_non_finite_steps_in_a_row_stop_the_run_and_no_checkpoint_holds_nan(tiny_data, tmp_path, monkeypatch, on_device):
    calls = _inject_nan(monkeypatch, None)
    if on_device:
        _fused_on_cpu(monkeypatch)
    trainer = _trainer(tiny_data, tmp_path, ["train.max_nonfinite_steps=4"])
    with pytest.raises(VoxadaptError, match=r"4 training steps in a row \(to step 4\) had a non-finite loss"):
        trainer.run()
    # The host sees a skipped step at once; on the device, at the next sync (the epoch end, step 5).
    assert len(calls) == (5 if on_device else 4) and all(torch.equal(before, after) for before, after in calls)
    saved = ckpt_io.list_checkpoints(trainer.ckpt_dir)
    assert [p.name for p in saved] == ["ckpt-000000003.pt"]  # MICRO's checkpoint_every_steps
    ckpt = torch.load(saved[0], weights_only=True)
    assert all(torch.isfinite(v).all() for part in ("model", "head") for v in ckpt[part].values())
    assert torch.equal(ckpt["head"]["weight"], calls[0][0])


@pytest.mark.slow
def test_the_host_reads_the_device_once_per_sync_every_steps(tiny_data, tmp_path, monkeypatch, caplog):
    """On the GPU's path (a fused optimiser) a training step reads nothing from the device, not even a
    non-finite one: the statistics, the stop flag and the skipped steps are read in one transfer every
    SYNC_EVERY steps, and still logged step by step."""
    from voxadapt.train import trainer as trainer_mod

    steps = 2 * trainer_mod.SYNC_EVERY
    calls = _inject_nan(monkeypatch, {3})
    _fused_on_cpu(monkeypatch)
    trainer = _trainer(tiny_data, tmp_path, [f"loader.batches_per_epoch={steps}", "train.phases.0.checkpoint_every_steps=0"])
    synced_at, reads, in_step = [], [], [False]
    real_average, real_step = trainer_mod.average_over_ranks, trainer_mod.PhaseTrainer._train_step

    def average(*args):  # noqa: ANN002, ANN202
        synced_at.append(len(calls))
        return real_average(*args)

    def step(self, *args):  # noqa: ANN001, ANN002, ANN202
        in_step[0] = True
        try:
            return real_step(self, *args)
        finally:
            in_step[0] = False

    def reader(name: str):  # noqa: ANN202
        real = getattr(torch.Tensor, name)

        def read(self, *args):  # noqa: ANN001, ANN002, ANN202
            if in_step[0]:
                reads.append(name)
            return real(self, *args)
        return read

    monkeypatch.setattr(trainer_mod, "average_over_ranks", average)
    monkeypatch.setattr(trainer_mod.PhaseTrainer, "_train_step", step)
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, reader(name))
    with caplog.at_level(logging.WARNING):
        trainer.run()
    assert len(calls) == steps and reads == []
    assert synced_at == list(range(trainer_mod.SYNC_EVERY, steps + 1, trainer_mod.SYNC_EVERY))
    assert "step 4: non-finite loss or gradient norm; step skipped (1 in a row" in caplog.text
    assert torch.equal(calls[3][0], calls[3][1]) and not torch.equal(calls[4][0], calls[4][1])


@pytest.mark.slow
def test_fused_sgd_survives_a_skipped_first_step_and_a_head_reinitialisation(tiny_data, tmp_path, monkeypatch):
    """torch's fused SGD leaves its momentum buffers uninitialised when its first step is skipped on
    the device, and fails on a parameter without one (the head after a DropClass re-initialisation):
    the trainer starts them at zero, so training goes on with finite weights."""
    calls = _inject_nan(monkeypatch, {0})
    _fused_on_cpu(monkeypatch)
    trainer = _trainer(tiny_data, tmp_path, ["train.phases.0.optimizer=sgd", "train.phases.0.dropclass={every_steps: 2, "
                                             "drop: 4, reinit_head: true, reinit_optimizer: true}"])
    trainer.run()
    assert trainer.skip_on_device and len(calls) == 5
    assert torch.equal(*calls[0]) and all(torch.isfinite(after).all() and not torch.equal(before, after)
                                          for before, after in calls[1:])
