import io

import numpy as np
import pytest
from PIL import Image

from bcc_pipeline.data.images import (
    MAX_PIXELS,
    ImageTooLargeError,
    open_image,
    perceptual_hash,
    square_resize,
    to_rgb,
)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_sixteen_bit_grey_is_rescaled_not_clipped():
    pixels = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    rgb = np.asarray(to_rgb(Image.fromarray(pixels)))
    assert rgb.shape == (2, 2, 3)
    assert rgb[0, 0, 0] == 0 and rgb[1, 1, 0] == 255
    assert 0 < rgb[1, 0, 0] < 255, "mid-range 16-bit values must not saturate"


def test_transparency_is_composited_on_black():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 1] = 255
    rgba[:2, :, 3] = 255
    rgb = np.asarray(to_rgb(Image.fromarray(rgba)))
    assert rgb[0, 0].tolist() == [0, 255, 0]
    assert rgb[3, 3].tolist() == [0, 0, 0]


def test_jpeg_draft_decodes_at_reduced_scale_but_reports_stored_size():
    data = _encode(Image.new("L", (512, 512), 100), "JPEG")
    image, stored = open_image(data, draft_size=128)
    assert stored == (512, 512)
    assert image.size == (128, 128)


def test_declared_giant_image_is_refused_before_decoding():
    side = int(MAX_PIXELS**0.5) + 100
    header = _encode(Image.new("1", (side, side)), "PNG")
    with pytest.raises(ImageTooLargeError):
        open_image(header)


def test_truncated_jpeg_fails_on_open():
    data = _encode(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)), "JPEG"
    )
    with pytest.raises(OSError):
        open_image(data[: len(data) // 2])


def test_square_resize_pads_instead_of_cropping():
    wide = np.zeros((50, 100), dtype=np.uint8)
    wide[:, :8] = 255  # a lesion at the far left edge must survive
    array = square_resize(Image.fromarray(wide), 32)
    assert array.shape == (3, 32, 32) and array.dtype == np.uint8
    assert array[0, :, 0].max() > 200
    assert array[0, 0, :].max() == 0, "padding rows are black"


def test_perceptual_hash_tolerates_reencoding_but_separates_content():
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 255, (16, 16), np.uint8)).resize((256, 256))
    other = Image.fromarray(rng.integers(0, 255, (16, 16), np.uint8)).resize((256, 256))
    copy, _ = open_image(_encode(base.resize((200, 200)), "JPEG", quality=70))

    def distance(a: Image.Image, b: Image.Image) -> int:
        return bin(int(perceptual_hash(a), 16) ^ int(perceptual_hash(b), 16)).count("1")

    assert distance(base, copy) <= 6
    assert distance(base, other) > 40
