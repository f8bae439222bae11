"""The served encoder's input contract (simsiam.image_input): what passes, and the one line that
each kind of wrong input gets."""

import numpy as np
import pytest

from simsiam.image_input import ImageInputError, check_images

GOOD = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)


def test_float_images_in_0_1_pass_as_float32():
    assert check_images(GOOD, 1) is GOOD
    assert check_images(GOOD.astype(np.float64), 1).dtype == np.float32
    assert check_images(np.zeros((0, 3, 8, 8), np.float32), 3).shape == (0, 3, 8, 8)
    assert check_images(np.clip(GOOD * 1.0005, 0, None), 1).dtype == np.float32  # rounding slack


@pytest.mark.parametrize("images, says", [
    ((GOOD * 255).astype(np.uint8), "float32 in [0, 1], N x 1 x H x W; got dtype uint8 (0-255 pixels? divide by 255)"),
    (GOOD * 255, "pixel values must be in [0, 1]; got "),
    (GOOD - 0.5, "pixel values must be in [0, 1]; got -0.49"),
    (GOOD[:, 0], "N x 1 x H x W; got shape (2, 28, 28)"),
    (np.repeat(GOOD, 3, axis=1), "N x 1 x H x W; got shape (2, 3, 28, 28)"),
    (np.where(GOOD > 0.5, np.nan, GOOD), "NaN"),
    (np.array([["a"]]), "got dtype <U1"),
])
def test_other_input_is_refused_in_one_line_without_the_array(images, says):
    with pytest.raises(ImageInputError) as err:
        check_images(images, 1)
    message = str(err.value)
    assert says in message and "\n" not in message and "[[" not in message and len(message) < 120
    if images.dtype.kind in "iu" or (images.dtype.kind == "f" and np.nanmax(images) > 2):
        assert message.endswith("(0-255 pixels? divide by 255)")


def test_the_trained_image_size_is_required_when_given():
    assert check_images(GOOD, 1, 28) is GOOD
    wanted = r"must be float32 in \[0, 1\], N x 1 x 32 x 32; got shape \(2, 1, 28, 28\)$"
    with pytest.raises(ImageInputError, match=wanted):
        check_images(GOOD, 1, 32)


def test_float16_and_float64_are_cast_to_float32_and_the_module_needs_only_numpy():
    import ast
    from pathlib import Path

    import simsiam.image_input as module

    for dtype in (np.float16, np.float64):
        assert check_images(GOOD.astype(dtype), 1, 28).dtype == np.float32
    tree = ast.parse(Path(module.__file__).read_text())  # it ships alone with every registered model
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
    assert imported <= {"numpy", "__future__"}, imported
