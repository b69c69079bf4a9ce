"""Stages 3 and 4: run the configured phases in order, each starting from the previous one's model.

Stage 3 runs train.phases; stage 4 runs adapt.phases from stage 3's result and publishes the
final model as exp/<name>/model (a link to the last phase's averaged model).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from voxadapt.config import Config, PhaseConfig, dump_yaml
from voxadapt.errors import VoxadaptError
from voxadapt.fileio import write_text_atomic
from voxadapt.train.distributed import init_distributed, shutdown
from voxadapt.train.trainer import PhaseTrainer

log = logging.getLogger(__name__)


def _setup_torch(cfg: Config) -> None:
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(cfg.seed)


def run_phases(cfg: Config, phases: list[PhaseConfig], first_index: int, data_dir: Path, exp_dir: Path,
               init_dir: Path | None) -> Path | None:
    info = init_distributed(cfg.train.device)
    try:
        for i, phase in enumerate(phases):
            init_dir = PhaseTrainer(cfg, phase, first_index + i, data_dir, exp_dir, init_dir, info).run()
    finally:
        shutdown(info)
    return init_dir


def train_stage(cfg: Config, data: str | Path, exp: str | Path) -> int:
    _setup_torch(cfg)
    exp_dir = Path(exp) / cfg.name
    exp_dir.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) == 0:
        write_text_atomic(exp_dir / "config.yaml", dump_yaml(cfg))
    run_phases(cfg, cfg.train.phases, 0, Path(data), exp_dir, None)
    return 0


def last_train_model(cfg: Config, exp_dir: Path) -> Path:
    final = exp_dir / cfg.train.phases[-1].name / "final"
    if not (final / "model.safetensors").is_file():
        raise VoxadaptError(f"{final}: no trained model; run stage 3 (train) first")
    return final


def publish_model(exp_dir: Path, final: Path) -> Path:
    """exp/<name>/model -> the final phase's model directory (relative link, replaced atomically)."""
    link = exp_dir / "model"
    tmp = exp_dir / ".model.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(final, exp_dir))
    os.replace(tmp, link)
    return link


def adapt_stage(cfg: Config, data: str | Path, exp: str | Path) -> int:
    _setup_torch(cfg)
    exp_dir = Path(exp) / cfg.name
    final = last_train_model(cfg, exp_dir)
    if cfg.adapt.phases:
        final = run_phases(cfg, cfg.adapt.phases, len(cfg.train.phases), Path(data), exp_dir, final) or final
    if int(os.environ.get("RANK", "0")) == 0:
        link = publish_model(exp_dir, final)
        log.info("stage 4: final model %s -> %s", link, final)
    return 0
