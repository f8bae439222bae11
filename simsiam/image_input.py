"""The served encoder's input contract: float images in [0, 1], N x C x H x W. Anything else is
refused with one line that says what came and what to send; 0-255 pixels pass silently otherwise
and give features about 100x off."""

from __future__ import annotations

import numpy as np

from simsiam.errors import DataError

SLACK = 1e-3  # float rounding of images that were divided by 255


class ImageInputError(DataError):
    """Images sent to a registered encoder do not meet its input contract."""


def check_images(images: object, channels: int) -> np.ndarray:
    """`images` as float32 if they meet the contract, else ImageInputError (one line, no array dump)."""
    x = np.asarray(images)
    pixels = " (0-255 pixels? divide by 255)"
    if x.dtype.kind != "f":
        raise ImageInputError(f"images must be float32 in [0, 1]; got dtype {x.dtype}"
                              + (pixels if x.dtype.kind in "iu" else ""))
    if x.ndim != 4 or x.shape[1] != channels:
        raise ImageInputError(f"images must have shape N x {channels} x H x W; got {tuple(x.shape)}")
    if np.isnan(x).any():
        raise ImageInputError("images contain NaN values")
    if x.size:
        lo, hi = float(x.min()), float(x.max())
        if lo < -SLACK or hi > 1 + SLACK:
            raise ImageInputError(f"pixel values must be in [0, 1]; got {lo:g} to {hi:g}" + (pixels if hi > 2 else ""))
    return x.astype(np.float32, copy=False)
