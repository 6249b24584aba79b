"""Reading and decoding the image files a user may have: every common format and mode, and every
way a file can fail mapped to one status a person understands. The manifest, the tensors and
predict all go through read_image_file and decode_image, so they accept and reject alike."""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, UnidentifiedImageError

_SIGNATURES: dict[str, Callable[[bytes], bool]] = {
    "JPEG": lambda head: head.startswith(b"\xff\xd8\xff"),
    "PNG": lambda head: head.startswith(b"\x89PNG\r\n\x1a\n"),
    "BMP": lambda head: head.startswith(b"BM"),
    "TIFF": lambda head: head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
    "WEBP": lambda head: head.startswith(b"RIFF") and head[8:12] == b"WEBP",
    "GIF": lambda head: head[:6] in (b"GIF87a", b"GIF89a"),
}
SUPPORTED_FORMATS = tuple(_SIGNATURES)
"""Pillow format names. Only these are decoded, whatever a file's suffix: a file is sniffed from
its first bytes (sniff_format) and handed to that one plugin, never to Pillow's guesswork over
dozens of formats."""
FORMAT_NAMES = f"{', '.join(SUPPORTED_FORMATS[:-1])} or {SUPPORTED_FORMATS[-1]}"

MAX_PIXELS = 50_000_000
"""Larger images are rejected before decoding: a decompression-bomb guard far above any MRI.

A count of pixels, not of bytes, because the memory a decode holds is a small constant per
pixel whatever the bit depth: the decoded frame (at most 4 bytes a pixel in Pillow, whose RGB
takes 4 too), for a 16-bit or float image its 8-bit rescaled copy (1 byte, see
_rescale_to_grey8, which never copies the whole image as floats) and the RGB result (4 bytes).
So about 450 MB at the limit; compositing transparency on black takes about 4 bytes a pixel
more per RGBA copy it makes."""
_HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
"""Pillow's modes of 16-bit, 32-bit integer and float grey: rescaled, not clipped, to 8 bits."""
_SCALE_BLOCK_PIXELS = 2**18
"""Pixels rescaled at a time by _rescale_to_grey8: a working set of a few MiB at any size."""
DEFAULT_MAX_FILE_BYTES = 64 * 2**20
"""Larger files are rejected unread: a 512x512 JPEG slice is about 50 KB, a 4096x4096 16-bit
uncompressed TIFF 32 MiB."""
SNIFF_BYTES = 132
"""Enough for every signature in sniff_format and for DICOM's (at offset 128)."""
PHASH_SIZE = 16
SYNTHETIC_MARK = b"bcc_pipeline synthetic sample: drawn by a program, not a medical image"
"""The comment of every generated JPEG: the image says it is synthetic wherever it is copied,
and the manifest records it (column `synthetic`), so that reports and model cards can say so."""

EMPTY, NOT_AN_IMAGE, UNREADABLE, TOO_LARGE = "empty", "not_an_image", "unreadable", "too_large"

_OTHER_KINDS = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\xd0\xcf\x11\xe0", "an Office or Thumbs.db file"),
)
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis"})
_HEIF_BRANDS = frozenset({b"mif1", b"msf1"})
"""The generic HEIF brands: the major brand of some AVIF files too, which then list avif among
their compatible brands."""


class ImageRejected(ValueError):
    """A file that cannot be used as an image. `status` is one of EMPTY, NOT_AN_IMAGE,
    UNREADABLE, TOO_LARGE; the message says why in words, without library internals."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class DecodedImage:
    rgb: Image.Image
    """The pixels as RGB (see to_rgb), at draft scale for a JPEG decoded with draft_size."""
    format: str
    mode: str
    """The mode as stored, before conversion to RGB."""
    width: int
    height: int
    """The size as stored, before any draft scaling."""
    comment: bytes | None = None
    """The file's comment, where its format has one (a JPEG's: the synthetic generator's mark)."""


def sniff_format(head: bytes) -> str | None:
    """The supported format whose signature starts `head` (a file's first bytes), if any."""
    return next((name for name, matches in _SIGNATURES.items() if matches(head)), None)


def describe_content(head: bytes) -> str:
    """What a file that is not a supported image seems to be, from its first bytes, in words."""
    if head[128:132] == b"DICM":
        return "a DICOM file (export the slices as PNG or JPEG)"
    if head[4:8] == b"ftyp":
        return _describe_iso_media(head)
    for magic, kind in _OTHER_KINDS:
        if head.startswith(magic):
            return kind
    if not any(byte < 32 and byte not in b"\t\n\r\f" for byte in head):
        first_line = head.decode("utf-8", "backslashreplace").strip().split("\n")[0]
        return f"text starting {first_line[:40]!r}"
    return f"unrecognised content (first bytes {head[:8].hex(' ')})"


def _describe_iso_media(head: bytes) -> str:
    """An ISO-BMFF file (one that starts with an `ftyp` box: a phone's HEIC photo, AVIF, MP4 or
    QuickTime video) named by its major brand (bytes 8-12), and for a generic HEIF one by its
    compatible brands, which follow the minor version as far as the box and `head` go."""
    major = head[8:12]
    box_end = min(int.from_bytes(head[:4], "big") or len(head), len(head))
    compatible = {head[at : at + 4] for at in range(16, box_end - 3, 4)}
    if major in _AVIF_BRANDS or (major in _HEIF_BRANDS and compatible & _AVIF_BRANDS):
        return "an AVIF image (convert it to PNG or JPEG)"
    if major in _HEIC_BRANDS | _HEIF_BRANDS:
        return "a HEIC/HEIF image (convert it to PNG or JPEG)"
    return "an ISO media file (video; export the slices as PNG or JPEG)"


def _unrecognised(head: bytes) -> ImageRejected:
    if not head:
        return ImageRejected(EMPTY, "empty file (0 bytes)")
    return ImageRejected(NOT_AN_IMAGE, f"not a {FORMAT_NAMES} image: {describe_content(head)}")


def read_image_file(path: Path | str, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The bytes of an image file, read whole only after its size and first bytes say it is a
    supported image: a stray archive or video costs one small read, not its size in memory.
    Files are at most max_bytes, so hashing them in memory needs no streaming."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ImageRejected(UNREADABLE, "not a regular file (a folder or a device)")
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > max_bytes:
                raise ImageRejected(
                    TOO_LARGE, f"{size:,} bytes, above the limit of {max_bytes:,} bytes per file"
                )
            head = handle.read(SNIFF_BYTES)
            if sniff_format(head) is None:
                raise _unrecognised(head)
            data = head + handle.read(max_bytes + 1 - len(head))
    except OSError as err:
        raise ImageRejected(UNREADABLE, f"cannot read the file: {err.strerror or err}") from None
    if len(data) > max_bytes:  # it grew while being read
        raise ImageRejected(TOO_LARGE, f"above the limit of {max_bytes:,} bytes per file")
    return data


def decode_image(data: bytes, draft_size: int | None = None) -> DecodedImage:
    """Fully decode `data` (so truncation shows here) and convert it to RGB; JPEGs decode at the
    smallest DCT scale that still covers draft_size. Every failure is an ImageRejected.

    Pillow's plugins raise many exception types on crafted input (OSError, SyntaxError,
    EOFError, struct.error, zlib.error, TypeError, IndexError, KeyError, MemoryError, ...), and
    which ones is not part of its API, so everything but what names a size problem becomes
    UNREADABLE: a file must never stop a scan or a predict run."""
    image_format = sniff_format(data[:SNIFF_BYTES])
    if image_format is None:
        raise _unrecognised(data[:SNIFF_BYTES])
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89M pixels; MAX_PIXELS below is stricter and says it in words.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[image_format])
        if image.width * image.height > MAX_PIXELS:
            raise ImageRejected(
                TOO_LARGE,
                f"{image.width}x{image.height} pixels, above the limit of {MAX_PIXELS:,}",
            )
        frames = getattr(image, "n_frames", 1)
        if frames > 1:  # which slice is meant is not ours to guess
            raise ImageRejected(
                UNREADABLE,
                f"holds {frames} frames (a stack of slices, or an animation); save each slice "
                "as an image file of its own",
            )
        width, height, mode = image.width, image.height, image.mode
        if draft_size is not None and image.format == "JPEG":
            image.draft(image.mode, (draft_size, draft_size))
        image.load()
        comment = image.info.get("comment")
        return DecodedImage(to_rgb(image), image_format, mode, width, height, comment)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, MemoryError):
        raise ImageRejected(TOO_LARGE, "too many pixels to decode safely") from None
    except UnidentifiedImageError:
        raise ImageRejected(
            UNREADABLE, f"starts like a {image_format} file but its header is corrupt"
        ) from None
    except Exception as err:  # see the docstring: the failure set of Pillow is open-ended
        raise ImageRejected(
            UNREADABLE,
            f"truncated, corrupt or unsupported {image_format} data ({type(err).__name__}: {err})",
        ) from None


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB whatever the source mode: 16-bit and float grey are rescaled, not clipped at 255;
    transparency is composited on black, the background of an MRI. A float image's NaN and
    infinite pixels (a masked background, say) take the ends of the finite range: one of them
    would otherwise make the whole range NaN and the image black."""
    if image.mode in _HIGH_DEPTH_MODES:
        image = Image.fromarray(_rescale_to_grey8(image))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")  # no needless copy
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _tiles(image: Image.Image) -> Iterator[tuple[tuple[int, int, int, int], np.ndarray]]:
    """The image as (box, pixels) tiles of at most _SCALE_BLOCK_PIXELS, in its own dtype."""
    columns = max(1, min(image.width, _SCALE_BLOCK_PIXELS))
    rows = max(1, _SCALE_BLOCK_PIXELS // columns)
    for top in range(0, image.height, rows):
        for left in range(0, image.width, columns):
            box = (left, top, min(left + columns, image.width), min(top + rows, image.height))
            yield box, np.asarray(image.crop(box))


def _rescale_to_grey8(image: Image.Image) -> np.ndarray:
    """A high-bit-depth or float grey image linearly mapped from its finite range onto 0-255.

    Two passes over tiles (the range, then the scaling, in float64 as one whole-image
    expression would compute it, so results are the same to the bit) keep the working set
    at the uint8 result plus a few MiB: a whole-image float64 copy is 8 bytes a pixel, and a
    95 KB 7000x7000 16-bit PNG once cost over a GB in each decoding process."""
    is_float = image.mode == "F"  # only float pixels can be NaN or infinite
    low = high = None
    for _, pixels in _tiles(image):
        if is_float:
            pixels = pixels[np.isfinite(pixels)]
        if pixels.size:
            tile_low, tile_high = float(pixels.min()), float(pixels.max())
            low = tile_low if low is None else min(low, tile_low)
            high = tile_high if high is None else max(high, tile_high)
    if low is None or high is None:
        raise ImageRejected(UNREADABLE, "no pixel has a finite value (all NaN or infinite)")
    grey = np.empty((image.height, image.width), dtype=np.uint8)
    for (left, top, right, bottom), pixels in _tiles(image):
        scaled = pixels.astype(np.float64)
        if is_float:
            np.nan_to_num(scaled, copy=False, nan=low, posinf=high, neginf=low)
        if high > low:
            scaled -= low
            scaled *= 255.0 / (high - low)
            np.rint(scaled, out=scaled)
        else:
            scaled[...] = 0
        grey[top:bottom, left:right] = scaled
    return grey


def square_resize(rgb: Image.Image, size: int) -> np.ndarray:
    """Resize with antialiasing so the longer side is `size`, then pad to a square on black:
    nothing at the edge is cut off, and a long thin image never becomes a huge square canvas.
    Returns uint8 CHW."""
    if rgb.size != (size, size):
        scale = size / max(rgb.size)
        scaled = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(scaled, Image.Resampling.BICUBIC, reducing_gap=None)
    if rgb.width != rgb.height:
        canvas = Image.new("RGB", (size, size))
        canvas.paste(rgb, ((size - rgb.width) // 2, (size - rgb.height) // 2))
        rgb = canvas
    return np.ascontiguousarray(np.asarray(rgb).transpose(2, 0, 1))


def model_input(data: bytes, size: int) -> np.ndarray:
    """What the model sees of an image file, in training and in predict alike: uint8 CHW."""
    return square_resize(decode_image(data, draft_size=size).rgb, size)


def perceptual_hash(rgb: Image.Image) -> str:
    """256-bit DCT hash as hex. On MRI-like slices, re-encoded, rescaled or brightened copies
    stay within 6 bits; of 6056 distinct synthetic slices, the closest pair differs in 8."""
    return str(imagehash.phash(rgb.convert("L"), hash_size=PHASH_SIZE))
