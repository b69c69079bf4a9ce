"""torchrun / DDP set-up from the environment torchrun provides (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from datetime import timedelta

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


def init_distributed(device_name: str, timeout_s: float = 1800.0) -> DistInfo:
    """`timeout_s`: how long a collective waits for the slowest rank (see `main_rank_done`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s))
        global _host_group
        # Host-side agreement (the stop flag, every step) must not wait for the GPU: a gloo group on the CPU.
        _host_group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s)) if device.type == "cuda" else None
    return DistInfo(rank, local, world, device)


_host_group = None


def any_rank(info: DistInfo, flag: bool) -> bool:
    """True on every rank if `flag` (a host-side flag, e.g. a stop signal) is true on any: an
    all-reduce of one number on the CPU, never waiting for a GPU, so it can run every step."""
    if not info.distributed:
        return flag
    t = torch.tensor([float(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_host_group)
    return bool(t.item() > 0)


_main_rank_sections = itertools.count()


def main_rank_done(info: DistInfo, poll_s: float = 0.2) -> None:
    """Every rank calls this after work only rank 0 does (validation, DropAdapt scoring, saving):
    rank 0 says it is done in the process group's key-value store; the others poll it, sleeping in
    between, so their wait is not a collective and has no timeout however long rank 0 takes."""
    if not info.distributed:
        return
    key = f"voxadapt/main_rank_done/{next(_main_rank_sections)}"  # every rank counts the same sections
    store = dist.distributed_c10d._get_default_store()
    if info.is_main:
        store.set(key, "1")
        return
    while not store.check([key]):
        time.sleep(poll_s)


def average_over_ranks(info: DistInfo, values: torch.Tensor) -> list[float]:
    """Mean over ranks of per-rank numbers held on the device (each rank's loss is over its share
    of the global batch), read by the host: one all-reduce and one transfer for them all."""
    return mean_over_ranks(info, values).tolist()


def mean_over_ranks(info: DistInfo, value: torch.Tensor) -> torch.Tensor:
    """The mean of a per-rank tensor over the ranks, detached and left on the device (no host sync)."""
    value = value.detach()
    if not info.distributed:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / info.world_size


def all_gather_cat(info: DistInfo, t: torch.Tensor) -> torch.Tensor:
    """Every rank's `t` (the same shape on all), concatenated in rank order; a CPU tensor over the
    host group, so under NCCL too it never waits for a GPU."""
    if not info.distributed:
        return t
    parts = [torch.empty_like(t) for _ in range(info.world_size)]
    dist.all_gather(parts, t.contiguous(), group=_host_group if t.device.type == "cpu" else None)
    return torch.cat(parts)


def gather_to_main(info: DistInfo, obj: object) -> list | None:
    """Every rank's `obj` on rank 0 (in rank order); None on the others."""
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


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
