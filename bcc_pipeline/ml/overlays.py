"""Explanation maps laid over their images, drawn with Pillow: a caption above each image, the
map in matplotlib's jet colormap at 40% opacity, pixels as they are (no smoothing), and a grid
of such panels. A panel is an array blend and a few lines of text: about 17 ms each here,
where a matplotlib figure per image took about 65 ms (saving one: 3 ms, see
PNG_COMPRESS_LEVEL)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from bcc_pipeline.storage import atomic_path

MAP_OPACITY = 0.4
MIN_SIDE = 192
"""Smaller images are enlarged (by a whole factor, nearest pixel) so that a caption fits."""
FONT_SIZE = 11
MAX_LINE_CHARS = 48
"""Longer caption lines (a long file name) keep their start and end around '...', so that one
name cannot widen every cell of the grid."""
LINE_HEIGHT = 14
PADDING = 4
GRID_COLUMNS = 4
PNG_COMPRESS_LEVEL = 1
"""zlib level 1 writes a 224 px panel in 3 ms instead of 16 (Pillow's default, 6), a grid of
16 in 26 ms instead of 94, for files about a quarter larger."""


@cache
def _jet() -> np.ndarray:
    """(256, 3) uint8 lookup table of the jet colormap."""
    return (colormaps["jet"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


@cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_SIZE)


def overlay_panel(image: np.ndarray, heat: np.ndarray, caption: str) -> Image.Image:
    """One uint8 CHW image with its [0, 1] map (H, W) laid over it, the caption above."""
    pixels = np.asarray(image).transpose(1, 2, 0).astype(np.float32)
    colours = _jet()[np.clip(np.rint(np.asarray(heat) * 255), 0, 255).astype(np.uint8)]
    blended = ((1 - MAP_OPACITY) * pixels + MAP_OPACITY * colours).round().astype(np.uint8)
    picture = Image.fromarray(blended)
    factor = -(-MIN_SIDE // max(picture.size))
    if factor > 1:
        picture = picture.resize(
            (picture.width * factor, picture.height * factor), Image.Resampling.NEAREST
        )
    lines = [_shortened(line) for line in caption.splitlines()]
    text_width = max((round(_font().getlength(line)) for line in lines), default=0)
    width = max(picture.width, text_width) + 2 * PADDING
    top = len(lines) * LINE_HEIGHT + 2 * PADDING
    panel = Image.new("RGB", (width, top + picture.height + PADDING), "white")
    panel.paste(picture, ((width - picture.width) // 2, top))
    draw = ImageDraw.Draw(panel)
    for row, line in enumerate(lines):
        left = (width - _font().getlength(line)) / 2
        draw.text((left, PADDING + row * LINE_HEIGHT), line, fill="black", font=_font())
    return panel


def _shortened(line: str) -> str:
    if len(line) <= MAX_LINE_CHARS:
        return line
    keep = (MAX_LINE_CHARS - 3) // 2
    return f"{line[:keep]}...{line[-keep:]}"


def panel_grid(panels: Sequence[Image.Image], columns: int = GRID_COLUMNS) -> Image.Image:
    """Panels in rows of `columns`, each centred in a cell the size of the largest."""
    columns = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // columns)
    cell_width = max(panel.width for panel in panels)
    cell_height = max(panel.height for panel in panels)
    grid = Image.new("RGB", (columns * cell_width, rows * cell_height), "white")
    for index, panel in enumerate(panels):
        row, column = divmod(index, columns)
        grid.paste(
            panel,
            (
                column * cell_width + (cell_width - panel.width) // 2,
                row * cell_height + (cell_height - panel.height) // 2,
            ),
        )
    return grid


def save_png(picture: Image.Image, path: Path) -> Path:
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return path
