"""One training phase: the loop, checkpoints every N steps and every epoch, resume, averaging.

Runs identically in one process or under torchrun (DDP). Everything that decides what a step
computes (sampler position, seeds of crops and augmentation, RNG for dropout, optimiser state)
is in the checkpoint, so a killed run resumes where it stopped and, on CPU in deterministic
mode, ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from voxadapt.augment.online import Augmenter
from voxadapt.config import Config, PhaseConfig
from voxadapt.data.dataset import CropBatchDataset, loader_workers, make_loader, stop_workers
from voxadapt.data.examples import ExampleTable
from voxadapt.data.sampler import SpeakerBatchSampler, epoch_batches
from voxadapt.errors import VoxadaptError
from voxadapt.fileio import StageMarker, file_digest, text_digest, write_text_atomic
from voxadapt.layout import AUGMENT_KINDS, DataLayout, ExpLayout, ModelDirLayout, PhaseLayout, trial_list
from voxadapt.models.aam import AAMSoftmax
from voxadapt.models.backbone import backbone_from_config
from voxadapt.models.speaker import SpeakerModel, build_model, load_weights, model_fingerprint, save_model_dir
from voxadapt.train import checkpoint as ckpt_io
from voxadapt.train.dev_eer import DevEer
from voxadapt.train.distill import Distiller
from voxadapt.train.distributed import (
    DistInfo,
    all_gather_cat,
    any_rank,
    average_over_ranks,
    broadcast_list,
    gather_to_main,
    main_rank_done,
    mean_over_ranks,
)
from voxadapt.train.dropadapt import HEAD_KEEPS_ALL, DropAdapt, adaptation_set, check_drop_schedule
from voxadapt.train.dropclass import DropClass
from voxadapt.train.imprint import imprint_head
from voxadapt.train.interrupt import StopRequested, ignore_stop_signals_in_workers
from voxadapt.train.optim import ParamGroup, lr_factor, make_optimizer, margin_at, param_groups, set_lr, set_trainable
from voxadapt.train.regularize import L2SP

log = logging.getLogger(__name__)

# Steps between the host's reads of the training statistics (also read at an epoch end, a
# checkpoint, a DropClass/DropAdapt point, a stop request and a step the host saw skipped): a GPU
# step itself never waits for the device.
SYNC_EVERY = 10


@dataclasses.dataclass
class StepStats:
    """One step as the host reads it at a sync: loss and accuracy over the global batch."""

    step: int  # from 1
    loss: float
    accuracy: float
    nonfinite: bool  # skipped
    in_a_row: int  # non-finite steps in a row, to this one
    margin: float
    lrs: list[float]  # of the optimiser's groups


def prepare_for_phase(model: SpeakerModel, head: AAMSoftmax, phase: PhaseConfig, tf32: bool,
                      dev: torch.device) -> tuple[SpeakerModel, AAMSoftmax]:
    """The phase's loss settings and speed options applied, the model on `dev` (also used by
    benchmarks/gpu_throughput.py, so it measures what training runs)."""
    head.scale = phase.scale
    head.inter_topk = phase.inter_topk
    head.inter_margin_ratio = phase.inter_margin / phase.margin if phase.margin else 0.0
    if phase.activation_checkpointing:  # transformers recomputes each layer in the backward pass
        model.backbone.enable_activation_checkpointing()
    if phase.layerdrop:
        model.backbone.enable_layerdrop(phase.layerdrop)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    model, head = model.to(dev), head.to(dev)
    if phase.compile:  # in place: parameter names (checkpoints) stay as they are
        model.backbone.model.encoder.compile()
        model.pooling.compile()
    return model, head


class TrainModule(nn.Module):
    """Model, head (and distiller) in one module, so DDP synchronises them all."""

    def __init__(self, model: SpeakerModel, head: AAMSoftmax, distiller: Distiller | None):
        super().__init__()
        self.model, self.head, self.distiller = model, head, distiller

    def forward(self, wav: torch.Tensor, labels: torch.Tensor, margin: float, classes: torch.Tensor | None = None):  # noqa: ANN201
        """(loss, logits, targets): AAM loss of the embedding, plus the KD term if distilling."""
        if self.distiller is None:
            return self.head(self.model(wav), labels, margin, classes)
        emb, distill_emb = self.model.pooling.encode(*self.model.features(wav))
        loss, logits, targets = self.head(emb, labels, margin, classes)
        return loss + self.distiller.weight * self.distiller.loss(wav, distill_emb, classes), logits, targets


class PhaseTrainer:
    def __init__(self, cfg: Config, phase: PhaseConfig, phase_index: int, data: DataLayout, exp: ExpLayout,
                 init_dir: Path | None, info: DistInfo):
        self.cfg, self.phase, self.info = cfg, phase, info
        self.data, self.exp, self.init_dir = data, exp, init_dir
        self.phase_layout = PhaseLayout(exp.phase_dir(phase.name))
        self.ckpt_dir = self.phase_layout.checkpoints
        self.final_dir = self.phase_layout.final.root
        self.seed = cfg.seed * 1000 + phase_index
        self.created = time.time()  # the set-up time (to the first batch in hand) is reported
        init_classes = ModelDirLayout(init_dir).classes.read_text().split() if init_dir else None
        train, sr = cfg.data.sets.train, cfg.data.sample_rate
        speeds = cfg.augment.speeds if cfg.augment.speed_perturb else []
        if cfg.loader.shards:
            self.table = ExampleTable.from_shards(data.shards(train), sr, speeds, init_classes)
        else:
            self.table = ExampleTable.from_manifest(data.cuts(train), sr, speeds, init_classes)
        digest = text_digest("\n".join(self.table.classes))
        # What this stage reads: the backbone by content, stage 2's augmentation manifests (not the
        # corpora and generator settings stage 2 made them from).
        stage2_only = ("musan_root", "rirs_root", "generated_noises", "generated_music", "generated_rirs", "generated_seconds")
        augment = {k: v for k, v in dataclasses.asdict(cfg.augment).items() if k not in stage2_only}
        augment["resources"] = {k: file_digest(m) if (m := data.augment_manifest(k)).is_file() else "" for k in AUGMENT_KINDS}
        self.fingerprint = {
            "model": model_fingerprint(cfg.model), "phase": phase.fingerprint(),
            "loader": cfg.loader.fingerprint(), "augment": augment,
            "seed": cfg.seed, "classes": digest,
            "init": file_digest(ModelDirLayout(init_dir).weights) if init_dir else "pretrained",
            "teacher": file_digest(ModelDirLayout(Path(cfg.model.distill.teacher)).weights) if cfg.model.distill.teacher else "",
        }
        self.marker = StageMarker(self.phase_layout.marker, self.fingerprint)
        # This phase's and every later one's drops must leave classes to train on: refused before any trains.
        for later in (cfg.train.phases + cfg.adapt.phases)[phase_index:]:
            batch = later.batch_size or cfg.loader.batch_size
            steps = later.epochs * epoch_batches(len(self.table), batch, cfg.loader.batches_per_epoch)
            check_drop_schedule(later, self.table.num_classes, steps,
                                max(2, batch if cfg.loader.sampler == "distinct_speakers" else 0))

    # ------------------------------------------------------------------------------ set-up
    def _build(self) -> None:
        cfg, phase, dev = self.cfg, self.phase, self.info.device
        model, head = build_model(cfg, self.table.num_classes)
        if self.init_dir:
            load_weights(ModelDirLayout(self.init_dir).weights, model, head)
        try:
            set_trainable(model, head, phase.trainable_layers, phase.cnn_grad_scale, phase.train_embedding)
        except ValueError as err:
            raise VoxadaptError(f"phase '{phase.name}': {err}") from None
        self.model, self.head = prepare_for_phase(model, head, phase, cfg.train.tf32, dev)
        self.distiller = None
        if cfg.model.distill.teacher:
            self.distiller = Distiller(cfg.model.distill, self.table.classes, model.pooling.embed_dim, dev).to(dev)
        crop_seconds = phase.crop_seconds or cfg.loader.crop_seconds
        if phase.head_init == "imprint" and not ckpt_io.list_checkpoints(self.ckpt_dir):
            # Before DDP wraps the module: every rank imprints the same rows (and DDP broadcasts rank 0's).
            imprint_head(self.model, self.head, CropBatchDataset(self.table, crop_seconds), phase.imprint_crops_per_class,
                         phase.batch_size or cfg.loader.batch_size, self.seed)
        self.module: nn.Module = TrainModule(self.model, self.head, self.distiller)
        if self.info.distributed:
            # A layer that LayerDrop skips gives its parameters no gradient on any rank (the draw is shared):
            # DDP must look for unused parameters then, or it waits for their gradients forever.
            self.module = nn.parallel.DistributedDataParallel(
                self.module, device_ids=[dev.index] if dev.type == "cuda" else None,
                find_unused_parameters=phase.layerdrop > 0)
        self.groups = param_groups(model, head, phase)
        if self.distiller is not None:
            self.groups.append(ParamGroup("distill", list(self.distiller.head.parameters()), phase.lr))
        self.optimizer = make_optimizer(self.groups, phase, fused=phase.fused_optimizer and dev.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=phase.precision == "fp16" and dev.type == "cuda")
        # A fused optimiser skips its update (and step count) on the device when `found_inf` is set, as for
        # GradScaler: a non-finite step then needs no host read. Otherwise (CPU, a non-fused optimiser, or
        # fp16, whose scaler skips overflows itself) the host decides each step.
        self.skip_on_device = bool(self.optimizer.defaults.get("fused")) and not self.scaler.is_enabled()
        self._zero_momentum([p for g in self.optimizer.param_groups for p in g["params"]])  # a checkpoint's, on resume, replace them
        if phase.precision == "fp16" and dev.type != "cuda":
            raise VoxadaptError(f"phase '{phase.name}': precision fp16 needs a GPU; use bf16 or fp32 on CPU")
        self.l2sp = None
        if phase.l2sp != "none":
            reference = backbone_from_config(cfg.model.backbone, cfg.seed).state_dict()
            params = {k: p for k, p in self.model.backbone.model.named_parameters() if p.requires_grad and k in reference}
            self.l2sp = L2SP(params, reference, phase.l2sp, phase.l2sp_weight)
        batch = phase.batch_size or cfg.loader.batch_size
        if (batch // self.info.world_size) % phase.accum_steps:
            raise VoxadaptError(f"phase '{phase.name}': per-process batch {batch // self.info.world_size} is not "
                                f"divisible by accum_steps {phase.accum_steps}")
        self.sampler = SpeakerBatchSampler(self.table.label, batch, self.seed, cfg.loader.sampler,
                                           self.info.world_size, self.info.rank, cfg.loader.batches_per_epoch,
                                           self.table.shard, cfg.loader.shard_window)
        n = self.table.num_classes
        self.dropclass = DropClass(phase.dropclass, n, self.seed) if phase.dropclass.drop else None
        self.dropadapt = None
        if phase.dropadapt.drop:
            test_dirs = [self.data.set_dir(s) for s in cfg.data.sets.tests]
            audio = adaptation_set(phase.dropadapt.adaptation_dir, test_dirs, phase.dropadapt.max_utts, self.seed)
            self.dropadapt = DropAdapt(phase.dropadapt, n, self.seed, audio, cfg.data.sample_rate, self.table.classes,
                                       self.phase_layout.dropadapt_log)
        self.head_classes: torch.Tensor | None = None  # rows of the head in the softmax (None: all)
        self.nonfinite_run = torch.zeros((), dtype=torch.float64, device=dev)  # non-finite steps in a row
        self.pending: list[tuple[int, torch.Tensor, float, list[float]]] = []  # steps the host has not read yet
        resources = {k: self.data.augment_manifest(k) for k in AUGMENT_KINDS}
        augment = Augmenter(cfg.augment, resources, cfg.data.sample_rate) if cfg.augment.probability > 0 else None
        self.dataset = CropBatchDataset(self.table, crop_seconds, augment)
        self.validator = None
        dev_set = cfg.data.sets.dev
        if self.info.is_main and dev_set and trial_list(self.data.set_dir(dev_set)).is_file():
            self.validator = DevEer(self.data.set_dir(dev_set), cfg.data.sample_rate, cfg.extract)
        self.writer = None
        if self.info.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.exp.tensorboard / self.phase.name))
        main_rank_done(self.info)  # rank 0 alone read the validation audio

    def _zero_momentum(self, params: list[torch.Tensor]) -> None:
        """SGD's momentum buffers of `params` made zero rather than left to the first step: the same
        update (no dampening), and torch's fused SGD needs them: it takes every buffer or none, and
        leaves them uninitialised when its first step is skipped (found_inf)."""
        if self.phase.optimizer == "sgd" and self.phase.momentum:
            for p in params:
                self.optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p)

    def _restore(self) -> int:
        """Load the newest checkpoint if any; returns the step to continue from."""
        ckpt = ckpt_io.latest_checkpoint(self.ckpt_dir, self.fingerprint)
        if ckpt is None:
            return 0
        self.model.load_state_dict(ckpt["model"])
        self.head.load_state_dict(ckpt["head"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scaler"]:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.sampler.load_state_dict(ckpt["sampler"])
        if self.distiller is not None:
            self.distiller.head.load_state_dict(ckpt["distill"])
        if self.dropadapt is not None:
            self.dropadapt.dropped = list(ckpt["dropadapt"])
        # Loaded on the CPU: the kept classes go where the labels are.
        self.head_classes = None if ckpt["head_classes"] is None else ckpt["head_classes"].to(self.info.device)
        if not ckpt_io.restore_rng(ckpt["rng"], self.info.device, self.info.rank):
            log.warning("phase %s: the checkpoint holds no RNG state for rank %d (written by fewer processes); "
                        "that rank's dropout goes on from its own seed", self.phase.name, self.info.rank)
        log.info("phase %s: resuming from %s (step %d)", self.phase.name, ckpt["path"].name, ckpt["step"])
        return int(ckpt["step"])

    def _save(self, step: int, consumed, end_of_epoch: int | None = None) -> None:  # noqa: ANN001
        """Every rank calls this: each rank's RNG state goes in; rank 0 writes, the others wait."""
        rng = gather_to_main(self.info, ckpt_io.rng_state(self.info.device))
        if self.info.is_main:
            self._write_checkpoint(step, consumed, end_of_epoch, rng)
        main_rank_done(self.info)

    def _write_checkpoint(self, step: int, consumed, end_of_epoch: int | None, rng: list) -> None:  # noqa: ANN001
        content = {
            "fingerprint": self.fingerprint, "step": step,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "head": {k: v.detach().cpu() for k, v in self.head.state_dict().items()},
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "sampler": self.sampler.state_dict(at=consumed), "rng": rng,
            "distill": {k: v.detach().cpu() for k, v in self.distiller.head.state_dict().items()} if self.distiller else {},
            "dropadapt": self.dropadapt.dropped if self.dropadapt else [],
            "head_classes": self.head_classes.cpu() if self.head_classes is not None else None,
        }
        ckpt_io.save_checkpoint(self.ckpt_dir, step, content, end_of_epoch)
        ckpt_io.prune_checkpoints(self.ckpt_dir, self.phase.average_last)

    # ------------------------------------------------------------------------------- steps
    def _batch_classes(self, labels: torch.Tensor) -> torch.Tensor:
        """The classes of the global batch (every rank's share), sorted: the softmax is the same for
        any number of processes. From the labels still on the CPU, gathered on the host: no device
        sync. The labels are always among the kept classes (head_classes)."""
        return torch.unique(all_gather_cat(self.info, labels)).to(self.info.device, non_blocking=True)

    def _train_step(self, batch: dict, margin: float, step: int) -> bool:
        """One optimiser step (step `step`, from 0). A step with a non-finite loss or gradient norm on
        any rank is skipped on all of them. Its statistics stay on the device, in `pending` until the
        next sync; returns True where the host decided (and so knows) that the step was skipped."""
        phase, dev = self.phase, self.info.device
        wav, labels = batch["wav"].to(dev, non_blocking=True), batch["label"].to(dev, non_blocking=True)
        autocast = torch.autocast(dev.type, dtype=torch.bfloat16 if phase.precision == "bf16" else torch.float16,
                                  enabled=phase.precision != "fp32")
        # softmax over the (kept) classes present in the global batch, or all kept ones
        classes = self._batch_classes(batch["label"]) if phase.dropclass.batch_classes_only else self.head_classes
        stats = torch.zeros(5, dtype=torch.float64, device=dev)  # loss, correct, examples, non-finite, in a row
        parts = list(zip(wav.chunk(phase.accum_steps), labels.chunk(phase.accum_steps)))
        skip: set[str] = set()  # the L2-SP terms of the layers LayerDrop skips: those layers sit the step out
        if phase.layerdrop:
            self.model.backbone.draw_layer_drops(self.seed, step)
            skip = self.model.backbone.dropped_parameter_names()
        for i, (w, y) in enumerate(parts):
            sync = i == len(parts) - 1 or not self.info.distributed
            ctx = self.module.no_sync() if not sync else contextlib.nullcontext()
            with ctx:
                with autocast:
                    ce, logits, targets = self.module(w, y, margin, classes)
                loss = ce
                if self.l2sp is not None:  # normalised by the global CE: each rank's share weighs as in one process
                    loss = self.l2sp.loss(ce, mean_over_ranks(self.info, ce) if self.l2sp.form == "normalized" else None, skip)
                self.scaler.scale(loss / len(parts)).backward()
            stats[0] += ce.detach() / len(parts)
            stats[1] += (logits.argmax(1) == targets).sum()
        stats[2] = len(labels)
        self.scaler.unscale_(self.optimizer)  # a no-op unless fp16
        params = [p for g in self.groups for p in g.params]
        if phase.grad_clip > 0:
            norm = nn.utils.clip_grad_norm_(params, phase.grad_clip)
        else:
            norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        bad = ~torch.isfinite(stats[0])
        if not self.scaler.is_enabled():  # fp16: the scaler skips overflowing steps and lowers its scale itself
            bad |= ~torch.isfinite(norm.to(dev))
        bad = (mean_over_ranks(self.info, bad.double()) > 0).double()  # on any rank: an all-reduce, async on NCCL
        self.nonfinite_run = self.nonfinite_run * bad + bad
        stats[3], stats[4] = bad, self.nonfinite_run
        self.pending.append((step + 1, stats, margin, [g["lr"] for g in self.optimizer.param_groups]))
        skipped = False
        if self.skip_on_device:
            self.optimizer.found_inf = bad.float()
            self.optimizer.step()
            del self.optimizer.found_inf
        else:
            skipped = bool(bad)  # the host decides: a host read each step (on a CPU, nothing to wait for)
            if not skipped:
                self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return skipped

    def _sync(self) -> list[StepStats]:
        """The host reads the steps since the last sync, with one all-reduce and one transfer for their
        statistics; writes them to TensorBoard, warns of each skipped step and stops the run at
        train.max_nonfinite_steps non-finite steps in a row. Every rank calls it at the same steps, so
        all make the same decisions."""
        values = average_over_ranks(self.info, torch.cat([stats for _, stats, _, _ in self.pending]))
        steps = [StepStats(step, loss, correct / examples, bad > 0, round(run), margin, lrs)
                 for (step, _, margin, lrs), (loss, correct, examples, bad, run)
                 in zip(self.pending, zip(*[iter(values)] * 5))]
        self.pending = []
        limit = self.cfg.train.max_nonfinite_steps
        for s in steps:
            if self.writer is not None:
                self.writer.add_scalar("train/loss", s.loss, s.step)
                self.writer.add_scalar("train/accuracy", s.accuracy, s.step)
                self.writer.add_scalar("train/margin", s.margin, s.step)
                for g, lr in zip(self.optimizer.param_groups, s.lrs):
                    self.writer.add_scalar(f"lr/{g['name']}", lr, s.step)
            if s.nonfinite and self.info.is_main:
                log.warning("phase %s step %d: non-finite loss or gradient norm; step skipped (%d in a row, at most %d)",
                            self.phase.name, s.step, s.in_a_row, limit)
            if s.in_a_row >= limit:
                raise VoxadaptError(f"phase '{self.phase.name}': {limit} training steps in a row (to step {s.step}) had a "
                                    "non-finite loss or gradient (train.max_nonfinite_steps); lower the learning rate, set "
                                    "grad_clip or use fp32, and re-run to resume from the last checkpoint")
        return steps

    def _log_epoch(self, epoch: int) -> None:
        if self.writer is None:
            return
        from voxadapt.report.plots import layer_weight_figure

        weights = {k: v.cpu().numpy() for k, v in self.model.pooling.layer_weights().items()}
        self.writer.add_figure("pooling/layer_weights", layer_weight_figure(weights, f"{self.phase.name}, epoch {epoch + 1}"), epoch)
        if self.validator is not None:
            result = self.validator(self.model, str(self.info.device))
            self._set_train_mode()
            for k, v in result.items():
                self.writer.add_scalar(f"valid/{k}", v, epoch)
            log.info("phase %s epoch %d: validation EER %.2f%%, minDCF(0.01) %.3f", self.phase.name, epoch + 1,
                     100 * result["eer"], result["min_dcf_0.01"])
        self.writer.flush()

    # --------------------------------------------------------------------------------- run
    def run(self) -> Path:
        if self.marker.is_done(outputs_hint=self.phase_layout.root):
            log.info("phase %s: already trained (%s); nothing to do", self.phase.name, self.final_dir)
            return self.final_dir
        self._build()
        step = self._restore()
        phase, batches_per_epoch = self.phase, self.sampler.batches_per_epoch
        n_train = sum(p.numel() for g in self.groups for p in g.params)
        n_total = sum(p.numel() for p in self.model.parameters()) + sum(p.numel() for p in self.head.parameters())
        log.info("phase %s: %d examples, %d classes, %d batches/epoch, %d epochs; trainable %.2f M of %.2f M (%.1f%%)",
                 phase.name, len(self.table), self.table.num_classes, batches_per_epoch, phase.epochs, n_train / 1e6,
                 n_total / 1e6, 100 * n_train / n_total)
        self._set_train_mode()
        stop = StopRequested()
        self.summary = {"trainable_params": n_train, "total_params": n_total, "start_step": step}
        started = time.time()
        # One loader for the phase: its workers persist across epochs. The sampler runs in this
        # process (each `for` starts it afresh), so set_epoch, restrict and a restart still apply.
        loader = make_loader(self.dataset, self.sampler, loader_workers(self.cfg.loader.num_workers),
                             worker_init_fn=ignore_stop_signals_in_workers, pin_memory=self.info.device.type == "cuda")
        try:
            step = self._loop(loader, step, batches_per_epoch, stop)
        finally:
            stop_workers(loader)
            stop.restore()
            if self.writer is not None:
                self.writer.close()
        if step < 0:
            raise KeyboardInterrupt
        self.summary.update(steps=step, seconds=round(time.time() - started, 1))
        self._finish()
        return self.final_dir

    def _set_train_mode(self) -> None:
        """The one place that decides train/eval mode: at the start and after every evaluation
        (validation, DropAdapt scoring), which leaves the whole model in training mode."""
        self.module.train()
        if self.model.backbone_frozen:
            self.model.backbone.eval()  # a frozen feature extractor: no dropout

    def _drop_due(self, step: int) -> bool:
        return bool((self.dropclass and self.dropclass.due(step)) or (self.dropadapt and self.dropadapt.due(step)))

    def _apply_drops(self, step: int) -> None:
        """Before step `step`: a DropClass draw or DropAdapt round restricts the data and the head."""
        dev = self.info.device
        if self.dropclass and self.dropclass.due(step):
            kept = self.dropclass.kept(step)
            self.head_classes = torch.from_numpy(kept).to(dev)
            self.sampler.restrict(kept)
            if self.phase.dropclass.reinit_head:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
                with torch.no_grad():
                    bound = (6.0 / sum(self.head.weight.shape)) ** 0.5  # Xavier-uniform, seeded per draw
                    self.head.weight.copy_((torch.rand(self.head.weight.shape, generator=gen) * 2 - 1) * bound)
                if self.phase.dropclass.reinit_optimizer:  # the authors' reset_affine_each_it keeps it
                    self.optimizer.state.pop(self.head.weight, None)
                    self._zero_momentum([self.head.weight])
        if self.dropadapt and self.dropadapt.due(step):
            newly = []
            if self.info.is_main:
                newly = self.dropadapt.update(step, self.model, self.head, dev)
                self._set_train_mode()
            main_rank_done(self.info)  # the scoring may outlast the collective timeout
            newly = broadcast_list(self.info, newly)
            if not self.info.is_main:
                self.dropadapt.record(newly)
            kept = self.dropadapt.kept()
            self.sampler.restrict(kept)
            if self.phase.dropadapt.variant not in HEAD_KEEPS_ALL:
                self.head_classes = torch.from_numpy(kept).to(dev)
            if newly and self.info.is_main:
                log.info("phase %s step %d: DropAdapt dropped %d classes (%d left), e.g. %s", self.phase.name, step,
                         len(newly), len(kept), ", ".join(self.table.classes[c] for c in newly[:3]))

    def _loop(self, loader: DataLoader, step: int, batches_per_epoch: int, stop: StopRequested) -> int:
        phase = self.phase
        log_every = max(1, batches_per_epoch // 5)
        while step < phase.epochs * batches_per_epoch:
            epoch = step // batches_per_epoch
            self.sampler.set_epoch(epoch)
            self._apply_drops(step)
            t0, losses, accs = time.time(), [], []
            consumed, restart = None, False
            for batch in loader:
                if "ready_seconds" not in self.summary:
                    self.summary["ready_seconds"] = round(time.time() - self.created, 1)
                    log.info("phase %s: first batch after %.1f s of set-up (example table, model, sampler, loader)",
                             phase.name, self.summary["ready_seconds"])
                progress = step / batches_per_epoch
                set_lr(self.optimizer, lr_factor(phase, progress))
                margin = margin_at(phase, progress)
                skipped = self._train_step(batch, margin, step)
                step += 1
                consumed = batch["state_after"]
                end_of_epoch = step % batches_per_epoch == 0
                save_due = bool(phase.checkpoint_every_steps) and step % phase.checkpoint_every_steps == 0
                drop_due = self._drop_due(step)
                stopping = any_rank(self.info, stop.flag)  # on the host: the GPU is not waited for
                if not (stopping or skipped or end_of_epoch or save_due or drop_due or step % SYNC_EVERY == 0):
                    continue
                steps = self._sync()
                for s in steps:
                    losses.append(s.loss)
                    accs.append(s.accuracy)
                    if self.info.is_main and (s.step % log_every == 0 or s.step % batches_per_epoch == 0):
                        log.info("phase %s epoch %d step %d/%d: loss %.3f acc %.3f margin %.3f lr %.2e (%.1f s)",
                                 phase.name, epoch + 1, s.step - epoch * batches_per_epoch, batches_per_epoch,
                                 np.mean(losses[-log_every:]), np.mean(accs[-log_every:]), s.margin, s.lrs[0],
                                 time.time() - t0)
                if stopping:
                    # _save returns on every rank only once rank 0's checkpoint is on disk: torchrun
                    # kills the survivors soon after the first worker exits.
                    self._save(step, consumed, epoch if end_of_epoch else None)
                    log.warning("interrupted: checkpoint saved at step %d; re-run the stage to resume", step)
                    return -1
                if end_of_epoch:
                    break
                if save_due:
                    self._save(step, consumed)
                if drop_due:
                    # Batches prefetched under the old classes must not be used: restart from here.
                    self.sampler.state = consumed
                    restart = True
                    break
            if restart:
                continue
            self._save(step, consumed, epoch)
            self._log_epoch(epoch)
            main_rank_done(self.info)  # validation may outlast the collective timeout
        return step

    def _finish(self) -> None:
        if self.info.is_main:
            ends = [p for p in ckpt_io.list_checkpoints(self.ckpt_dir) if ckpt_io.is_epoch_end(p)]
            chosen = ends[-self.phase.average_last:]
            state = ckpt_io.average_states(chosen, self.fingerprint)
            save_model_dir(self.final_dir, self.cfg, self.model, self.head, self.table.classes, state)
            from voxadapt.report.plots import save_layer_weight_png

            self.model.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")})
            save_layer_weight_png(self.phase_layout.layer_weights_png,
                                  {k: v.cpu().numpy() for k, v in self.model.pooling.layer_weights().items()},
                                  f"{self.cfg.name} / {self.phase.name}")
            s = self.summary
            s["seconds_per_step"] = round(s["seconds"] / max(1, s["steps"] - s["start_step"]), 3)
            write_text_atomic(self.phase_layout.summary, json.dumps(s, indent=1) + "\n")
            self.marker.mark_done()
            log.info("phase %s: done; model (average of %d epoch checkpoints) in %s", self.phase.name, len(chosen),
                     self.final_dir)
        main_rank_done(self.info)
