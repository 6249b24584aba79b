import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from bcc_pipeline.ml.overlays import (
    LINE_HEIGHT,
    MAP_OPACITY,
    MAX_LINE_CHARS,
    MIN_SIDE,
    PADDING,
    overlay_panel,
    panel_grid,
    save_png,
)


def _jet(value: float) -> np.ndarray:
    return np.array(colormaps["jet"](value)[:3]) * 255


def test_a_panel_blends_the_jet_map_over_the_image_below_its_caption():
    image = np.full((3, 200, 200), 100, dtype=np.uint8)
    heat = np.zeros((200, 200), dtype=np.float32)
    heat[:, 100:] = 1.0  # right half: the map's maximum
    panel = np.asarray(overlay_panel(image, heat, "first line\nsecond line"))
    top = 2 * LINE_HEIGHT + 2 * PADDING
    assert panel.shape[0] == top + 200 + PADDING
    left = (panel.shape[1] - 200) // 2
    cold, hot = panel[top + 50, left + 50], panel[top + 50, left + 150]
    expected_cold = (1 - MAP_OPACITY) * 100 + MAP_OPACITY * _jet(0.0)
    expected_hot = (1 - MAP_OPACITY) * 100 + MAP_OPACITY * _jet(1.0)
    np.testing.assert_allclose(cold, expected_cold, atol=1)
    np.testing.assert_allclose(hot, expected_hot, atol=1)
    caption = panel[:top]
    assert (caption < 128).any(), "the caption is drawn"
    assert (caption[:, :, 0] == 255).mean() > 0.5, "on white"


def test_a_small_image_is_enlarged_by_a_whole_factor_without_smoothing():
    image = np.zeros((3, 32, 32), dtype=np.uint8)
    image[:, :, 16:] = 255
    panel = overlay_panel(image, np.zeros((32, 32), np.float32), "x")
    factor = -(-MIN_SIDE // 32)
    pixels = np.asarray(panel)[LINE_HEIGHT + 2 * PADDING :][: 32 * factor]
    left = (panel.width - 32 * factor) // 2
    row = pixels[0, left : left + 32 * factor, 0]
    assert len(np.unique(row)) == 2, "two flat halves, no interpolated values between them"
    assert (row[: 16 * factor] == row[0]).all() and (row[16 * factor :] == row[-1]).all()


def test_the_grid_holds_every_panel_in_rows_of_four(tmp_path):
    panels = [Image.new("RGB", (50, 60), (i * 40, 0, 0)) for i in range(5)]
    grid = panel_grid(panels)
    assert grid.size == (4 * 50, 2 * 60)
    pixels = np.asarray(grid)
    for index in range(5):
        row, column = divmod(index, 4)
        assert pixels[row * 60 + 30, column * 50 + 25, 0] == index * 40
    path = save_png(grid, tmp_path / "grid.png")
    with Image.open(path) as written:
        assert written.format == "PNG" and written.size == grid.size


def test_a_long_name_in_a_caption_is_shortened_to_the_longest_line_kept():
    image, heat = np.zeros((3, 224, 224), np.uint8), np.zeros((224, 224), np.float32)
    longest_kept = overlay_panel(image, heat, "x" * MAX_LINE_CHARS)
    longer = overlay_panel(image, heat, "x" * (MAX_LINE_CHARS + 500))
    assert longer.width <= longest_kept.width and longer.height == longest_kept.height


@pytest.mark.parametrize("name", ["bad\udcffname.jpg", "tab\tand\x00nul.jpg", "日本語.jpg", ""])
def test_any_file_name_can_be_a_caption(name):
    panel = overlay_panel(np.zeros((3, 32, 32), np.uint8), np.zeros((32, 32), np.float32), name)
    assert panel.width >= MIN_SIDE
