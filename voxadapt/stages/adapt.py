"""Stage 4: adapt.phases from stage 3's model (<exp>/<last train phase>/final), then <exp>/model,
a link to the final phase's averaged model that stages 5 and 8 read."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from voxadapt.config import Config
from voxadapt.errors import VoxadaptError
from voxadapt.layout import DataLayout, ExpLayout, PhaseLayout
from voxadapt.stages.train import run_phases, setup_torch

log = logging.getLogger(__name__)


def last_train_model(cfg: Config, exp: ExpLayout) -> Path:
    final = PhaseLayout(exp.phase_dir(cfg.train.phases[-1].name)).final
    if not final.weights.is_file():
        raise VoxadaptError(f"{final.root}: no trained model; run stage 3 (train) first")
    return final.root


def publish_model(exp: ExpLayout, final: Path) -> Path:
    """<exp>/model -> the final phase's model directory (relative link, replaced atomically)."""
    link = exp.model
    tmp = link.with_name(".model.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(final, link.parent))
    os.replace(tmp, link)
    return link


def run(cfg: Config, data: DataLayout, exp: ExpLayout) -> None:
    setup_torch(cfg)
    final = last_train_model(cfg, exp)
    if cfg.adapt.phases:
        final = run_phases(cfg, cfg.adapt.phases, len(cfg.train.phases), data, exp, final) or final
    if int(os.environ.get("RANK", "0")) == 0:
        link = publish_model(exp, final)
        log.info("stage 4: final model %s -> %s", link, final)
