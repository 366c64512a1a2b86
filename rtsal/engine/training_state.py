"""The resumable state of a training run: model, optimizer, scheduler, scaler and counters,
one safetensors file written atomically (``OUT/training_state.safetensors``), no pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rtsal.errors import CheckpointError
from rtsal.files import atomic_write_bytes

STATE_NAME = "training_state.safetensors"
STATE_FORMAT = "rtsal-training-state"


def save_training_state(
    out: Path, model, optimizer, scheduler, scaler, counters: dict[str, Any], config: dict
) -> None:
    """Write the state; ``counters`` holds step, epoch, position and seconds."""
    from safetensors.torch import save

    tensors = {
        f"model.{k}": v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()
    }
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for i, st in opt["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt.{i}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(i), {})[k] = v
    meta = {
        "format": STATE_FORMAT,
        **counters,
        "config": config,
        "optimizer_groups": [
            {k: v for k, v in g.items() if k != "params"} for g in opt["param_groups"]
        ],
        "optimizer_scalars": scalars,
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    data = save(tensors, metadata={"state": json.dumps(meta)})
    atomic_write_bytes(out / STATE_NAME, data)


def read_training_state(out: str | Path) -> dict[str, Any]:
    """The resumable state in ``out``: ``{"meta": ..., "tensors": ...}``."""
    from safetensors import SafetensorError, safe_open

    path = Path(out).expanduser() / STATE_NAME
    if not path.is_file():
        raise CheckpointError(f"nothing to resume in {Path(out)}: no {STATE_NAME}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("state", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable training state ({exc})") from None
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not an rtsal training state")
    return {"meta": meta, "tensors": tensors}


def load_training_state(state: dict[str, Any], model, optimizer, scheduler, scaler, where: Path):
    """Put a read state back into the run's objects; returns its counters."""
    meta, tensors = state["meta"], state["tensors"]
    model_sd = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    if set(model_sd) != set(model.trainable_state_dict()):
        raise CheckpointError(f"{where}: training state does not match the model")
    model.load_state_dict(model_sd, strict=False)
    per_param: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            per_param.setdefault(int(i), {})[name] = v
    for i, sc in meta["optimizer_scalars"].items():
        per_param.setdefault(int(i), {}).update(sc)
    groups = optimizer.state_dict()["param_groups"]
    for g, saved in zip(groups, meta["optimizer_groups"], strict=True):
        g.update(saved)
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    scheduler.load_state_dict({**scheduler.state_dict(), **meta["scheduler"]})
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    return {k: meta[k] for k in ("step", "epoch", "position")} | {
        "seconds": float(meta.get("seconds", 0.0))
    }


class TrainingLog:
    """``OUT/train_log.jsonl``: one JSON object per step. A resumed run keeps the rows up to
    its step (later ones, written after the last checkpoint, are dropped) and appends."""

    def __init__(self, path: Path, resumed_step: int, enabled: bool = True):
        self.path, self.enabled = path, enabled
        self.rows: list[dict[str, float]] = []
        if resumed_step and path.is_file():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:  # a line cut by a kill
                    continue
                if row.get("step", 0) <= resumed_step:
                    self.rows.append(row)
        self._file = None

    def __enter__(self) -> TrainingLog:
        if self.enabled:
            self._file = self.path.open("w")
            self._file.writelines(json.dumps(r) + "\n" for r in self.rows)
            self._file.flush()
        return self

    def write(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        if self._file is not None:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()
