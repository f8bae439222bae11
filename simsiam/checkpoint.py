"""Training checkpoints: one file with the config, model, optimizer, scheduler, scaler, step and RNG
state. Written atomically, so a reader sees the old checkpoint or the new one, never half of one.

`model_from_checkpoint` is the one way from a checkpoint to a SimSiam model; where the bytes come
from (a run directory, S3) is the caller's business.
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from simsiam.config import Config, validate_config
from simsiam.errors import DataError, DiskFullError
from simsiam.models import SimSiam, build_model

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Serialised in memory first: a full disk then fails a plain write with ENOSPC (named, with the
    size needed) instead of torch's "unexpected pos", and the previous checkpoint stays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(payload, buf)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(buf.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            kept = "; the previous checkpoint is kept" if path.exists() else ""
            raise DiskFullError(path, buf.getbuffer().nbytes, kept) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


# Checkpoints written before the RNG state held only tensors carry numpy's RNG array.
_LEGACY_NUMPY = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _parse(fh: BinaryIO, where: str) -> dict[str, Any]:
    """weights_only: tensors, containers and numbers, never code (a checkpoint from elsewhere cannot
    run anything when loaded)."""
    try:
        with torch.serialization.safe_globals(_LEGACY_NUMPY):
            ckpt = torch.load(fh, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise DataError(f"checkpoint {where} cannot be read: {exc}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise DataError(f"checkpoint {where} is not a simsiam checkpoint (missing model/config)")
    return ckpt


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint file, or the one in a run directory."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    with path.open("rb") as fh:
        return _parse(fh, str(path))


def checkpoint_from_bytes(data: bytes, where: str) -> dict[str, Any]:
    return _parse(io.BytesIO(data), where)


def load_weights(model: torch.nn.Module, state: dict[str, Any], source: str | Path) -> None:
    """load_state_dict with a user-facing error when the architecture does not match."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise DataError(f"checkpoint {source} does not fit the configured model (model.* keys changed?): "
                        f"{first}") from None


def model_from_checkpoint(ckpt: dict[str, Any], source: str | Path, weights: bool = True) -> tuple[SimSiam, Config]:
    """The checkpoint's model (in eval mode) and config. `weights=False` gives the same architecture
    at its random init: the baseline a trained encoder must beat."""
    cfg = validate_config(ckpt["config"])
    model = build_model(cfg.model)
    if weights:
        load_weights(model, ckpt["model"], source)
    return model.eval(), cfg
