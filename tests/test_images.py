"""The staging policy for a user's images (simsiam/images.py), on files the tests write: every format
Pillow decodes, grey/RGB/CMYK/palette/alpha/16-bit, any size; files that are not images."""

import io

import numpy as np
import pytest
from PIL import Image

from simsiam.errors import DataError
from simsiam.images import JPEG_QUALITY, prepare, walk_folder


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _decoded(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


GREY = Image.fromarray(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28) % 251)
RGB = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8))


@pytest.mark.parametrize("fmt,mode", [("PNG", "L"), ("PNG", "RGB"), ("JPEG", "L"), ("JPEG", "RGB"), ("WEBP", "RGB"),
                                      ("BMP", "RGB"), ("TIFF", "RGB"), ("TIFF", "L"), ("GIF", "P"), ("PNG", "P")])
def test_every_common_format_and_mode_is_staged_as_grey_or_rgb(fmt, mode):
    src = (GREY if mode == "L" else RGB).convert(mode)
    out = prepare(_encode(src, fmt), f"x.{fmt.lower()}", max_side=256)
    back = _decoded(out.data)
    assert back.mode == ("L" if mode == "L" else "RGB") and out.channels == (1 if mode == "L" else 3)
    assert back.size == src.size and (out.height, out.width) == (src.size[1], src.size[0])


def test_an_8bit_png_or_jpeg_that_needs_no_change_is_kept_byte_for_byte():
    for fmt in ("PNG", "JPEG"):
        data = _encode(RGB, fmt)
        assert prepare(data, "a", max_side=256).data == data
    webp = _encode(RGB, "WEBP", lossless=True)
    assert _decoded(prepare(webp, "b", 256).data).format == "JPEG"  # other formats: re-encoded


def test_a_16bit_grey_png_is_scaled_to_8_bits_not_clipped():
    ramp = (np.arange(256, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)  # 0 .. 65535
    out = prepare(_encode(Image.fromarray(ramp), "PNG"), "deep.png", max_side=256)
    got = np.asarray(_decoded(out.data))
    assert out.channels == 1 and got.dtype == np.uint8
    assert np.array_equal(got, np.arange(256, dtype=np.uint8).reshape(16, 16))  # 65535 -> 255, not 255 everywhere


def test_transparency_is_composited_over_white_and_cmyk_becomes_rgb():
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))  # fully transparent black ...
    rgba.paste((255, 0, 0, 255), (0, 0, 16, 32))  # ... with an opaque red left half
    got = np.asarray(_decoded(prepare(_encode(rgba, "PNG"), "a.png", 256).data)).astype(int)  # JPEG: near, not exact
    assert abs(got[16, 4] - [255, 0, 0]).max() < 12  # red
    assert abs(got[16, 28] - [255, 255, 255]).max() < 12  # white, not black
    grey_alpha = Image.new("LA", (4, 4), (0, 0))
    assert np.asarray(_decoded(prepare(_encode(grey_alpha, "PNG"), "g.png", 256).data)).tolist() == [[255] * 4] * 4
    cmyk = Image.new("CMYK", (6, 6), (0, 255, 255, 0))  # red in CMYK
    out = prepare(_encode(cmyk, "JPEG", quality=100), "c.jpg", 256)
    r, g, b = np.asarray(_decoded(out.data)).reshape(-1, 3).mean(0)
    assert out.channels == 3 and r > 200 and g < 60 and b < 60


def test_a_photo_is_turned_upright_as_its_exif_orientation_says():
    wide = Image.new("RGB", (60, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    out = prepare(_encode(wide, "JPEG", exif=exif.tobytes()), "phone.jpg", max_side=256)
    assert _decoded(out.data).size == (20, 60) and (out.height, out.width) == (60, 20)


def test_large_images_shrink_to_the_longer_side_and_small_ones_are_never_enlarged():
    big = Image.new("RGB", (1000, 600), (10, 20, 30))
    out = prepare(_encode(big, "PNG"), "big.png", max_side=256)
    assert _decoded(out.data).size == (256, 154) and (out.height, out.width) == (154, 256)
    assert _decoded(out.data).format == "JPEG" and f"{JPEG_QUALITY}" == "90"
    assert prepare(_encode(GREY, "PNG"), "small.png", max_side=256).height == 28


@pytest.mark.parametrize("data,words", [(b"just some text\n", "not an image"),
                                        (_encode(RGB, "JPEG")[:200], "cannot be decoded"),
                                        (b"", "not an image")])
def test_a_file_that_is_not_an_image_or_is_cut_short_is_a_data_error_naming_it(data, words):
    with pytest.raises(DataError, match=rf"^notes/x\.bin: .*{words}"):
        prepare(data, "notes/x.bin", max_side=256)


def test_a_folder_is_walked_at_any_depth_in_a_fixed_order_without_hidden_files(tmp_path):
    for rel in ("b.png", "a/z.png", "a/b/c/deep.png", ".hidden.png", ".cache/x.png", "a/.DS_Store"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(rel.encode())
    items = list(walk_folder(tmp_path))
    assert [i.origin for i in items] == ["b.png", "a/z.png", "a/b/c/deep.png"]
    assert items[2].read() == b"a/b/c/deep.png" and items[0].token.startswith("5-")
    with pytest.raises(DataError, match="not found"):
        list(walk_folder(tmp_path / "missing"))


def test_an_image_over_pillows_pixel_limit_is_skipped_not_decoded(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the limit scaled down: 2x over it is refused
    with pytest.raises(DataError, match=r"^bomb\.png: an image too large to decode safely"):
        prepare(_encode(Image.new("L", (100, 100)), "PNG"), "bomb.png", max_side=256)


def test_a_collection_is_named_after_its_folder_or_its_bucket_and_last_part():
    from simsiam.storage.unlabelled import collection_name

    assert collection_name("./My Photos/") == "my-photos"
    assert collection_name("s3://team/photos/2026/") == "team-2026"
    assert collection_name("s3://team") == "team"
