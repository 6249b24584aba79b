"""Decoding of the image files a user may have: any common format and mode, safely and fast."""

from __future__ import annotations

import io
import warnings

import imagehash
import numpy as np
from PIL import Image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
MAX_PIXELS = 50_000_000
"""Larger images are rejected before decoding: a decompression-bomb guard far above any MRI."""

PHASH_SIZE = 16


class ImageTooLargeError(ValueError):
    """The header declares more pixels than MAX_PIXELS."""


def open_image(data: bytes, draft_size: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Fully decode `data` (so truncation shows here) and return it with its stored size;
    JPEGs decode at the smallest DCT scale that still covers draft_size."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageTooLargeError(str(err)) from err
    if image.width * image.height > MAX_PIXELS:
        raise ImageTooLargeError(
            f"{image.width}x{image.height} exceeds the {MAX_PIXELS:,}-pixel limit"
        )
    stored_size = image.size
    if draft_size is not None and image.format == "JPEG":
        image.draft(image.mode, (draft_size, draft_size))
    image.load()
    return image, stored_size


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB whatever the source mode: 16-bit and float grey are rescaled, not clipped at 255;
    transparency is composited on black, the background of an MRI."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) * (255.0 / (high - low)) if high > low else pixels * 0
        image = Image.fromarray(scaled.round().astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def square_resize(image: Image.Image, size: int) -> np.ndarray:
    """Pad to a square on black, then resize with antialiasing: nothing at the edge is cut off.
    Returns uint8 CHW."""
    rgb = to_rgb(image)
    side = max(rgb.size)
    if rgb.width != rgb.height:
        canvas = Image.new("RGB", (side, side))
        canvas.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
        rgb = canvas
    if side != size:
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)
    return np.ascontiguousarray(np.asarray(rgb).transpose(2, 0, 1))


def model_input(data: bytes, size: int) -> np.ndarray:
    """What the model sees of an image file, in training and in predict alike: uint8 CHW."""
    image, _ = open_image(data, draft_size=size)
    return square_resize(image, size)


def perceptual_hash(image: Image.Image) -> str:
    """256-bit DCT hash as hex. On MRI-like slices, re-encoded, rescaled or brightened copies
    stay within 6 bits; of 6056 distinct synthetic slices, the closest pair differs in 8."""
    return str(imagehash.phash(to_rgb(image).convert("L"), hash_size=PHASH_SIZE))
