"""Stage 3: train.phases in order, each starting from the previous one's model, on the training
cuts <data>/manifests/<train>/ (or stage 2's shards <data>/shards/<train>/, with loader.shards)
into <exp>/<phase>/ (checkpoints, final/, summary.json)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from voxadapt.config import Config, PhaseConfig, dump_yaml
from voxadapt.fileio import write_text_atomic
from voxadapt.layout import DataLayout, ExpLayout
from voxadapt.models.backbone import check_backbone
from voxadapt.train.distributed import init_distributed, shutdown
from voxadapt.train.trainer import PhaseTrainer

log = logging.getLogger(__name__)


def setup_torch(cfg: Config) -> None:
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Per rank: dropout masks and sampled class tokens differ across ranks (rank 0: the one-process
    # stream). The model is built from it too, but DDP starts every rank from rank 0's weights; the
    # data order and crops come from the sampler's own seeds.
    torch.manual_seed(cfg.seed + int(os.environ.get("RANK", "0")))


def run_phases(cfg: Config, phases: list[PhaseConfig], first_index: int, data: DataLayout, exp: ExpLayout,
               init_dir: Path | None) -> Path | None:
    info = init_distributed(cfg.train.device, cfg.train.collective_timeout_s)
    try:
        for i, phase in enumerate(phases):
            init_dir = PhaseTrainer(cfg, phase, first_index + i, data, exp, init_dir, info).run()
    finally:
        shutdown(info)
    return init_dir


def run(cfg: Config, data: DataLayout, exp: ExpLayout) -> None:
    check_backbone(cfg.model.backbone)  # before anything is written
    setup_torch(cfg)
    exp.root.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) == 0:
        write_text_atomic(exp.config, dump_yaml(cfg))
    run_phases(cfg, cfg.train.phases, 0, data, exp, None)
