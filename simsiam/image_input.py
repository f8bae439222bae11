"""The registered encoder's input contract: images as float32 in [0, 1], N x C x H x W with the C, H and
W it was trained on. Float16 and float64 (what JSON numbers become) are cast to float32; anything
else is refused with one line that says what came and what to send (0-255 pixels would otherwise
pass silently and give features about 100x off). Shipped with the pyfunc as a file of its own:
numpy only."""

from __future__ import annotations

import numpy as np

SLACK = 1e-3  # float rounding of images that were divided by 255


class ImageInputError(ValueError):
    """Images sent to a registered encoder do not meet its input contract."""


def contract(channels: int, size: int | None) -> str:
    hw = f"{size} x {size}" if size else "H x W"
    return f"float32 in [0, 1], N x {channels} x {hw}"


def check_images(images: object, channels: int, size: int | None = None) -> np.ndarray:
    """`images` as float32 if they meet the contract, else ImageInputError (one line, no array dump).
    `size`: the H and W required (None: any)."""
    x = np.asarray(images)
    pixels = " (0-255 pixels? divide by 255)"
    if x.dtype.kind != "f":
        raise ImageInputError(f"images must be {contract(channels, size)}; got dtype {x.dtype}"
                              + (pixels if x.dtype.kind in "iu" else ""))
    if x.ndim != 4 or x.shape[1] != channels or (size and x.shape[2:] != (size, size)):
        raise ImageInputError(f"images must be {contract(channels, size)}; got shape {tuple(x.shape)}")
    if np.isnan(x).any():
        raise ImageInputError("images contain NaN values")
    if x.size:
        lo, hi = float(x.min()), float(x.max())
        if lo < -SLACK or hi > 1 + SLACK:
            raise ImageInputError(f"pixel values must be in [0, 1]; got {lo:g} to {hi:g}" + (pixels if hi > 2 else ""))
    return x.astype(np.float32, copy=False)
