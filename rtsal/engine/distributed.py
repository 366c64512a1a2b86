"""torch.distributed set-up for ``torchrun``: NCCL on GPUs, gloo on CPUs, one process per device.

    torchrun --nproc-per-node N -m rtsal train --blackbox ... --data ... --batch-size G

``--batch-size`` is the global batch G; each of the N processes takes G / N samples of every
step, so the learning rate needs no rescaling and N processes follow the same trajectory as one
process with batch G (see ``rtsal.engine._rng`` for how the randomness is made to agree).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from rtsal.device import resolve_device
from rtsal.errors import RtsalError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"  # where collective tensors live (NCCL needs CUDA tensors)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    if not launched_by_torchrun():
        return DistInfo(), resolve_device(device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    elif dev.type == "cpu":
        backend = "gloo"
    else:
        raise RtsalError(f"distributed training runs on CUDA or CPU, not {dev.type}")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local_rank, str(dev)), dev


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_across(info: DistInfo, values: dict[str, float]) -> dict[str, float]:
    """Average logged scalars over the processes (NaNs, e.g. no fake sample, are skipped)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    v = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=info.device)
    ok = (~torch.isnan(v)).double()
    both = torch.stack([torch.nan_to_num(v), ok])
    dist.all_reduce(both)
    mean = both[0] / both[1].clamp(min=1)
    mean[both[1] == 0] = float("nan")
    return dict(zip(keys, mean.tolist(), strict=True))


def any_across(info: DistInfo, flag: bool) -> bool:
    """True on every process when it is true on any (e.g. a Ctrl-C reached one of them)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
