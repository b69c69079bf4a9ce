"""torchrun / DDP set-up from the environment torchrun provides (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from voxadapt.errors import VoxadaptError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto', 'cpu', 'cuda' (this process's GPU under torchrun) or 'cuda:N', checked to exist here."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise VoxadaptError(f"device '{name}' is not a device name; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise VoxadaptError(f"device '{name}': this machine (torch {torch.__version__}) has no usable CUDA GPU; "
                                "use cpu (or auto)")
        index = local_rank if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise VoxadaptError(f"device '{name}': there is no GPU {index} (this machine has "
                                f"{torch.cuda.device_count()}); use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
        return torch.device("cuda", index)
    return device


def init_distributed(device_name: str) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, local, world, device)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def any_rank(info: DistInfo, flag: bool) -> bool:
    """True on every rank if `flag` is true on any (e.g. one rank got Ctrl-C)."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def average_over_ranks(info: DistInfo, *values: float) -> tuple[float, ...]:
    """Mean of per-rank numbers (each rank's loss is over its share of the global batch)."""
    if not info.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return tuple((t / info.world_size).tolist())


def broadcast_list(info: DistInfo, values: list[int]) -> list[int]:
    """Rank 0's list on every rank."""
    if not info.distributed:
        return values
    box = [values]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()
