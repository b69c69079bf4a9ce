"""Training checkpoints: atomic, complete (model, optimiser, sampler, RNG), loaded without pickles.

Under torchrun the RNG state is every rank's (a list in rank order), each rank restoring its own.
Files are <phase dir>/checkpoints/ckpt-<step>.pt, or ckpt-<step>-end<epoch>.pt when written at
the end of an epoch (the ones averaged into the phase's model). Everything inside is tensors,
numbers, strings, lists and dicts, so `torch.load(weights_only=True)` reads it: a checkpoint
from elsewhere cannot run code.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from voxadapt.compat import fingerprint_changes, upgrade_state_dict
from voxadapt.errors import VoxadaptError, first_line, located
from voxadapt.fileio import atomic_path

FORMAT = "voxadapt-checkpoint-1"
_NAME = re.compile(r"^ckpt-(\d{9})(-end\d{4})?\.pt$")


def checkpoint_path(directory: Path, step: int, end_of_epoch: int | None = None) -> Path:
    suffix = f"-end{end_of_epoch:04d}" if end_of_epoch is not None else ""
    return directory / f"ckpt-{step:09d}{suffix}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """By step, oldest first."""
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if _NAME.match(p.name)), key=lambda p: p.name)


def is_epoch_end(path: Path) -> bool:
    return "-end" in path.name


def check_finite(step: int, content: dict) -> None:
    """No checkpoint holds a NaN or infinite weight: resuming from one could never recover."""
    for part in ("model", "head", "distill"):
        for name, value in (content.get(part) or {}).items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise VoxadaptError(f"step {step}: {part} weight {name} is not finite; no checkpoint written (the earlier "
                                    "ones hold finite weights): lower the learning rate, set grad_clip, or use fp32")


def save_checkpoint(directory: Path, step: int, content: dict, end_of_epoch: int | None = None) -> Path:
    check_finite(step, content)
    path = checkpoint_path(directory, step, end_of_epoch)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **content}, tmp)
    return path


def latest_checkpoint(directory: Path, fingerprint: dict) -> dict | None:
    """The newest checkpoint in `directory` (None if there is none), checked against `fingerprint`."""
    paths = list_checkpoints(directory)
    return {**load_checkpoint(paths[-1], fingerprint), "path": paths[-1]} if paths else None


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict | list[dict], device: torch.device, rank: int = 0) -> bool:
    """This rank's RNG state from a checkpoint's `rng`: one state per rank (a list, as the trainer
    saves) or a single one. False, and nothing restored, when it holds none for this rank (a run
    resumed with more processes than wrote it: the rank keeps its own seed's stream)."""
    states = state if isinstance(state, list) else [state]
    if rank >= len(states):
        return False
    torch.set_rng_state(states[rank]["torch"])
    if device.type == "cuda" and states[rank].get("cuda") is not None:
        torch.cuda.set_rng_state(states[rank]["cuda"], device)
    return True


def load_checkpoint(path: Path, fingerprint: dict) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for foreign or torn files
        raise VoxadaptError(located(path, None, f"not a readable voxadapt checkpoint ({first_line(err)})",
                                    "delete it to resume from the one before")) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise VoxadaptError(located(path, None, "not a voxadapt checkpoint", "delete it or use another exp dir"))
    if changed := fingerprint_changes(ckpt.get("fingerprint") or {}, fingerprint):
        raise VoxadaptError(located(path, None, f"checkpoint of another config ({', '.join(changed)} changed)",
                                    f"delete {path.parent.parent} to start this phase over, or use a new experiment name"))
    if "model" in ckpt:  # written by an older version: today's parameter names
        ckpt["model"] = upgrade_state_dict(ckpt["model"])
    return ckpt


def prune_checkpoints(directory: Path, keep_epoch_ends: int) -> None:
    """Keep the last `keep_epoch_ends` end-of-epoch checkpoints and the newest one."""
    paths = list_checkpoints(directory)
    keep = set([p for p in paths if is_epoch_end(p)][-keep_epoch_ends:]) | set(paths[-1:])
    for p in paths:
        if p not in keep:
            p.unlink(missing_ok=True)


def average_states(paths: list[Path], fingerprint: dict) -> dict[str, torch.Tensor]:
    """Element-wise mean of the model and head weights of several checkpoints."""
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for p in paths:
        ckpt = load_checkpoint(p, fingerprint)
        weights = {**ckpt["model"], **{f"head.{k}": v for k, v in ckpt["head"].items()}}
        for k, v in weights.items():
            dtypes[k] = v.dtype
            total[k] = total[k] + v.double() if k in total else v.double()
    return {k: (v / len(paths)).to(dtypes[k]) if dtypes[k].is_floating_point else v.to(dtypes[k]) // len(paths)
            for k, v in total.items()}
