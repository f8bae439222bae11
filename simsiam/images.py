"""The images users have: the files of a folder (flat or nested to any depth) and the policy that
makes any of them ready for training.

Every format Pillow decodes is taken (JPEG, PNG with 16 bits or alpha, WebP, BMP, TIFF, GIF ...;
grey, RGB, CMYK, palettes), at any size. The staging policy (`prepare`):

- the file is decoded in full: a file that is not an image, is cut short, or is over Pillow's pixel
  limit is a `DataError` naming it (staging skips and counts such files);
- a photo is turned upright as its EXIF orientation says;
- grey stays grey (8-bit `L`; 16-bit grey is scaled to 8 bits, not clipped), every other mode
  becomes RGB; transparency is composited over white (a transparent pixel is background, not black);
- the image is shrunk so that its longer side is at most `max_side`, never enlarged (LANCZOS);
- an 8-bit JPEG or PNG in `L` or RGB that needs no change is kept byte for byte; any other is
  encoded as PNG when grey (lossless) and as JPEG at quality 90 when RGB.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from simsiam.errors import DataError

WIDE_GREY_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}  # 16/32-bit integer and float grey
GREY_MODES = {"1", "L", "LA"} | WIDE_GREY_MODES
KEPT_FORMATS = {"JPEG", "PNG"}
JPEG_QUALITY = 90
ORIENTATION = 0x0112  # the EXIF tag


@dataclass(frozen=True)
class Item:
    """One file of a collection: its origin (the path relative to the folder, or the object key), a
    token that changes when the file does (size and mtime, or the S3 ETag), and how to read it."""

    origin: str
    token: str
    read: Callable[[], bytes]


@dataclass(frozen=True)
class Prepared:
    data: bytes  # the encoded image as staged
    channels: int  # 1 (grey) or 3 (RGB)
    height: int
    width: int


def prepare(data: bytes, origin: str, max_side: int) -> Prepared:
    """The image of `data` under the staging policy (module docstring)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            upright = im.getexif().get(ORIENTATION, 1) == 1  # a phone's photo may say how to turn it
            kept = im.format in KEPT_FORMATS and im.mode in ("L", "RGB") and max(im.size) <= max_side and upright
            out = _to_8bit(im if upright else ImageOps.exif_transpose(im))
    except UnidentifiedImageError:
        raise DataError(f"{origin}: not an image (no format Pillow decodes)") from None
    except Image.DecompressionBombError:
        raise DataError(f"{origin}: an image too large to decode safely (over Pillow's pixel limit)") from None
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for cut-short and corrupt files
        raise DataError(f"{origin}: an image that cannot be decoded ({str(exc)[:100]})") from None
    if max(out.size) > max_side:
        out.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    channels = 1 if out.mode == "L" else 3
    if not kept:
        buf = io.BytesIO()
        if channels == 1:
            out.save(buf, format="PNG", compress_level=6)
        else:
            out.save(buf, format="JPEG", quality=JPEG_QUALITY)
        data = buf.getvalue()
    return Prepared(data, channels, out.size[1], out.size[0])


def _to_8bit(im):
    """`L` for grey modes, RGB for the rest; alpha over white; 16-bit and float grey scaled to 8 bits."""
    from PIL import Image

    if im.mode in WIDE_GREY_MODES:
        arr = np.asarray(im, dtype=np.float64)
        if im.mode == "F":  # floats: [0, 1], or already on the 8-bit scale
            scale = 255.0 if arr.max() <= 1 else 1.0
        else:  # integers: 16-bit when any value is over 255
            scale = 255.0 / 65535.0 if arr.max() > 255 else 1.0
        return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        grey = im.mode.startswith("L")
        rgba = im.convert("RGBA")
        back = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out = Image.alpha_composite(back, rgba).convert("RGB")
        return out.convert("L") if grey else out
    return im.convert("L") if im.mode in GREY_MODES else im.convert("RGB")


def walk_folder(root: str | Path) -> Iterator[Item]:
    """Every file under `root`, at any depth, in a fixed order (names sorted at each level); hidden
    files and folders (a leading dot) are left out."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} not found (or not a directory)")
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            path = Path(folder) / name
            st = path.stat()
            yield Item(path.relative_to(root).as_posix(), f"{st.st_size}-{st.st_mtime_ns}", path.read_bytes)
