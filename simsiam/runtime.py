"""Where and how a process computes: the device from config, autocast, and the RNG state that a
checkpoint carries so a resumed run draws the same random numbers as an uninterrupted one."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch

from simsiam.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """`train.device` as a torch device; a ConfigError names the value when it cannot be used here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device={name!r} is not a device; allowed: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but no CUDA device is available; use auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"train.device={name!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


def native_bf16(device: torch.device) -> bool:
    """bf16 math in hardware: CUDA (Ampere+) or a CPU with AVX512-BF16 / AMX that torch's kernels may
    use. Elsewhere torch emulates it, far slower than fp32 (docs/data-and-storage.md).
    `ATEN_CPU_CAPABILITY=avx2` (see docs/benchmarks.md, the AVX2 stand-in) caps the kernels at AVX2."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(amp: str, channels_last: bool | str, device: torch.device) -> tuple[str, bool]:
    """`train.amp` and `train.channels_last` with `auto` made concrete for this device: bf16 and
    channels_last where bf16 is native, fp32 and contiguous elsewhere (where fp32 + channels_last
    conv backward was measured to stall on CPU)."""
    fast = native_bf16(device) if "auto" in (amp, channels_last) else False
    amp = ("bf16" if fast else "none") if amp == "auto" else amp
    if channels_last == "auto":
        channels_last = device.type == "cuda" or (fast and amp == "bf16")
    return amp, bool(channels_last)


def autocast(device: torch.device, amp: str):
    """`train.amp` as a context: none, bf16 or fp16 autocast on the device's type."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Tensors, ints and tuples only, so a checkpoint loads with torch.load(weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                       int(has_gauss), float(gauss)),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), *rest))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
