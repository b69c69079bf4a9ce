"""Masked prediction of frame units (HuBERT) with denoising inputs (WavLM), on one process.

Pipeline (each step resumable): unlabeled corpus -> MFCC k-means targets -> training with
checkpoints -> `save_pretrained` export. Everything is drawn from seeded generators.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from voxadapt.augment.generate import NOISE_KINDS, make_noise
from voxadapt.augment.online import add_at_snr
from voxadapt.config import Config
from voxadapt.data.audio import read_utterance
from voxadapt.data.dataset import make_loader, stop_workers
from voxadapt.data.kaldi_dir import DataDir, write_table
from voxadapt.data.sampler import BatchSpec, SpeakerBatchSampler
from voxadapt.data.validate import validate_data_dir
from voxadapt.errors import VoxadaptError, located
from voxadapt.fileio import StageMarker, atomic_dir
from voxadapt.layout import PretrainLayout, dir_marker, pretraining_summary
from voxadapt.models.backbone import random_hf_model
from voxadapt.pretrain.targets import HOP, FrameTargets, fit_targets, mfcc, num_frames
from voxadapt.train import checkpoint as ckpt_io
from voxadapt.train.interrupt import StopRequested, ignore_stop_signals_in_workers

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------- corpus


def prepare_corpus(cfg: Config, work: Path, nj: int) -> DataDir:
    p = cfg.pretrain
    if p.data_dir:
        return validate_data_dir(p.data_dir, cfg.data.sample_rate, cfg.data.min_duration, nj=nj)
    from voxadapt.corpus.synthetic import render, speaker_jobs

    syn = dataclasses.replace(cfg.data.synthetic, utts_per_speaker=p.utts_per_speaker, seed=p.corpus_seed)
    layout = PretrainLayout(work)
    marker = StageMarker(dir_marker(layout.data_dir), {"synthetic": dataclasses.asdict(syn), "speakers": p.speakers})
    if not marker.is_done(outputs_hint=layout.data_dir):
        # 'pre' ids and their own seed: voices unrelated to the embedded corpus's speakers.
        rendered = render(speaker_jobs("pre", range(p.speakers), p.corpus_seed, layout.audio), syn,
                          cfg.data.sample_rate, nj)
        DataDir(layout.data_dir, {u: path for utts in rendered.values() for u, path in utts},
                {u: spk for spk, utts in rendered.items() for u, _ in utts}).write()
        d = validate_data_dir(layout.data_dir, cfg.data.sample_rate, cfg.data.min_duration, nj=nj)
        write_table(d.path / "reco2dur", ((r, f"{v:.4f}") for r, v in (d.reco2dur or {}).items()))
        marker.mark_done()
    return DataDir.load(layout.data_dir)


# ---------------------------------------------------------------------------------- batches


class MaskedPredictionBatches(Dataset):
    """BatchSpec -> {'wav': (B, S), 'targets': (B, F), 'mask': (B, F)} with frame-aligned crops."""

    def __init__(self, audio: list[np.ndarray], targets: FrameTargets, frames: int, cfg: Config):
        self.audio, self.targets, self.frames = audio, targets, frames
        self.samples = (frames - 1) * HOP + 400
        self.p, self.sr = cfg.pretrain, cfg.data.sample_rate

    def __len__(self) -> int:
        return len(self.audio)

    def _mask(self, rng: np.random.Generator) -> np.ndarray:
        mask = np.zeros(self.frames, dtype=bool)
        starts = np.flatnonzero(rng.random(self.frames - self.p.mask_length + 1) < self.p.mask_prob)
        if len(starts) == 0:
            starts = rng.integers(0, self.frames - self.p.mask_length + 1, 1)
        for s in starts:
            mask[s:s + self.p.mask_length] = True
        return mask

    def _corrupt(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.p.noise_prob:
            return x
        if rng.random() < 0.5:  # an overlapping second speaker on part of the crop (WavLM's mixing)
            other = self.audio[int(rng.integers(len(self.audio)))]
            span = int(len(x) * rng.uniform(0.2, 0.5))
            src = int(rng.integers(0, max(1, len(other) - span)))
            dst = int(rng.integers(0, len(x) - span + 1))
            noise = np.zeros_like(x)
            piece = other[src:src + span]
            noise[dst:dst + len(piece)] = piece
            return add_at_snr(x, noise, rng.uniform(0, 10))
        kind = NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))]
        return add_at_snr(x, make_noise(kind, len(x) / self.sr, self.sr, rng)[: len(x)].astype(np.float32),
                          rng.uniform(5, 20))

    def __getitem__(self, spec: BatchSpec) -> dict:
        wav = np.empty((len(spec.examples), self.samples), dtype=np.float32)
        tgt = np.empty((len(spec.examples), self.frames), dtype=np.int64)
        mask = np.empty((len(spec.examples), self.frames), dtype=bool)
        for row, (i, seed) in enumerate(zip(spec.examples, spec.seeds)):
            rng = np.random.default_rng(np.random.SeedSequence(list(seed)))
            labels = self.targets.of(i)
            k = int(rng.integers(0, len(labels) - self.frames + 1))
            wav[row] = self._corrupt(self.audio[i][k * HOP: k * HOP + self.samples], rng)
            tgt[row] = labels[k:k + self.frames]
            mask[row] = self._mask(rng)
        return {"wav": torch.from_numpy(wav), "targets": torch.from_numpy(tgt), "mask": torch.from_numpy(mask),
                "state_after": spec.state_after}


# ---------------------------------------------------------------------------------- training


def build_pretraining_model(cfg: Config) -> tuple[nn.Module, nn.Linear]:
    # mask_time_prob > 0 makes transformers create the learned mask embedding; masks are ours.
    b = cfg.model.backbone
    model = random_hf_model(b.type, {**b.arch, "mask_time_prob": 0.05}, cfg.seed)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed + 1)
        head = nn.Linear(model.config.hidden_size, cfg.pretrain.clusters)
    return model, head


def lr_at(step: int, cfg: Config) -> float:
    p = cfg.pretrain
    if step < p.warmup_steps:
        return p.lr * (step + 1) / p.warmup_steps
    return p.lr * max(0.0, (p.steps - step) / max(1, p.steps - p.warmup_steps))


def pretrain(cfg: Config, work: Path, nj: int) -> dict:
    p = cfg.pretrain
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    model, head = build_pretraining_model(cfg)  # first: a bad architecture fails before any work
    work.mkdir(parents=True, exist_ok=True)
    d = prepare_corpus(cfg, work, nj)
    audio = [read_utterance(d, u) for u in d.utterance_ids]
    frames = num_frames(int(p.crop_seconds * cfg.data.sample_rate))
    keep = [i for i, x in enumerate(audio) if num_frames(len(x)) >= frames]
    if not keep:
        raise VoxadaptError(located(d.path, None, f"no utterance is at least {p.crop_seconds} s long",
                                    "lower pretrain.crop_seconds or give longer audio"))
    audio = [audio[i] for i in keep]
    target_file = PretrainLayout(work).targets
    marker = StageMarker(PretrainLayout(work).targets_marker, {"clusters": p.clusters, "frames": p.kmeans_frames, "seed": cfg.seed,
                                                   "utterances": [d.utterance_ids[i] for i in keep]})
    if not marker.is_done(outputs_hint=target_file):
        targets, inertia = fit_targets([mfcc(x, cfg.data.sample_rate) for x in audio], p.clusters, p.kmeans_frames, cfg.seed)
        targets.save(target_file)
        marker.mark_done()
        log.info("k-means: %d clusters over %d frames (inertia %.2f per frame)", p.clusters, len(targets.labels), inertia)
    targets = FrameTargets.load(target_file)

    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay, betas=(0.9, 0.98))
    sampler = SpeakerBatchSampler(np.zeros(len(audio), dtype=np.int64), p.batch_size, cfg.seed,
                                  batches_per_epoch=p.steps)
    dataset = MaskedPredictionBatches(audio, targets, frames, cfg)
    fingerprint = {"pretrain": dataclasses.asdict(p), "arch": cfg.model.backbone.arch, "type": cfg.model.backbone.type,
                   "seed": cfg.seed, "corpus": d.utterance_ids[:3] + [str(len(audio))]}
    ckpt_dir, cpu = PretrainLayout(work).checkpoints, torch.device("cpu")
    step = 0
    if (ckpt := ckpt_io.latest_checkpoint(ckpt_dir, fingerprint)) is not None:
        model.load_state_dict(ckpt["model"])
        head.load_state_dict(ckpt["head"])
        opt.load_state_dict(ckpt["optimizer"])
        sampler.load_state_dict(ckpt["sampler"])
        ckpt_io.restore_rng(ckpt["rng"], cpu)
        step = int(ckpt["step"])
        log.info("pre-training: resuming from %s (step %d)", ckpt["path"].name, step)

    stop = StopRequested()
    history: list[tuple[int, float, float]] = []
    log_every = max(1, min(50, p.steps // 10))
    start = time.time()

    def save(consumed) -> None:  # noqa: ANN001
        ckpt_io.save_checkpoint(ckpt_dir, step, {
            "fingerprint": fingerprint, "step": step, "model": model.state_dict(), "head": head.state_dict(),
            "optimizer": opt.state_dict(), "sampler": sampler.state_dict(at=consumed), "rng": ckpt_io.rng_state(cpu)})
        ckpt_io.prune_checkpoints(ckpt_dir, 1)

    loader = make_loader(dataset, sampler, p.num_workers, worker_init_fn=ignore_stop_signals_in_workers)
    try:
        model.train()
        losses, accs = [], []
        for batch in loader:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            mask = batch["mask"]
            hidden = model(batch["wav"], mask_time_indices=mask).last_hidden_state
            logits = head(hidden[mask])
            target = batch["targets"][mask]
            loss = nn.functional.cross_entropy(logits, target)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            losses.append(float(loss.detach()))
            accs.append(float((logits.argmax(1) == target).float().mean()))
            if step % log_every == 0 or step == p.steps:
                history.append((step, float(np.mean(losses[-log_every:])), float(np.mean(accs[-log_every:]))))
                log.info("pre-training step %d/%d: loss %.3f, masked-frame accuracy %.3f, lr %.1e (%.0f s)",
                         step, p.steps, history[-1][1], history[-1][2], lr_at(step, cfg), time.time() - start)
            if stop.flag:
                save(batch["state_after"])
                log.warning("interrupted: checkpoint saved at step %d; re-run to resume", step)
                raise KeyboardInterrupt
            if step % p.checkpoint_every_steps == 0 or step == p.steps:
                save(batch["state_after"])
    finally:
        stop_workers(loader)
        stop.restore()
    return {"steps": step, "seconds_this_run": round(time.time() - start, 1), "history": history,
            "utterances": len(audio), "hours": round(sum(len(x) for x in audio) / cfg.data.sample_rate / 3600, 2),
            "model": model}


def export(cfg: Config, result: dict, out_dir: Path, command: str) -> None:
    """save_pretrained (safetensors + config.json, preprocessor_config.json) plus a note of how the model was made."""
    from transformers import Wav2Vec2FeatureExtractor

    model = result.pop("model")
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        # Pre-trained on raw waveforms: said in the file fine-tuning reads it from (models/backbone.py).
        Wav2Vec2FeatureExtractor(sampling_rate=cfg.data.sample_rate, do_normalize=False,
                                 return_attention_mask=True).save_pretrained(tmp)
        pretraining_summary(tmp).write_text(json.dumps({
            "objective": "HuBERT-style masked prediction of MFCC k-means units, WavLM-style denoising",
            "command": command, "pretrain": dataclasses.asdict(cfg.pretrain), "arch": cfg.model.backbone.arch,
            **result}, indent=1) + "\n")
        for f in tmp.iterdir():
            f.chmod(0o644)  # shipped in the repository: readable by everyone
