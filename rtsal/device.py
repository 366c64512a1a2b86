"""Device choice: CUDA when present, then Apple's MPS, else the CPU; under ``torchrun``, one
GPU per process of a machine."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from rtsal.errors import RtsalError


def resolve_device(name: str = "auto") -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise RtsalError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RtsalError("--device cuda asked for, but no CUDA device is available")
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise RtsalError("--device mps asked for, but MPS is not available")
    return dev


def process_device(
    device: str, environ: Mapping[str, str] | None = None, cuda_devices: int | None = None
) -> str:
    """The device of this process: under ``torchrun`` (``LOCAL_RANK`` set) with several CUDA
    devices, ``auto`` and ``cuda`` become ``cuda:LOCAL_RANK`` (modulo the number of devices), so
    the processes of a machine share its GPUs instead of all using the first; otherwise
    ``device`` itself."""
    env = os.environ if environ is None else environ
    local = env.get("LOCAL_RANK")
    if local is None or str(device).lower() not in ("auto", "cuda") or not local.isdigit():
        return device
    if cuda_devices is None:
        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cuda_devices < 2:
        return device
    return f"cuda:{int(local) % cuda_devices}"
