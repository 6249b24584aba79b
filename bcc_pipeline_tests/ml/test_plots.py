from pathlib import Path

import matplotlib
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from bcc_pipeline.ml import plots
from bcc_pipeline.ml.evaluation import classification_report

NAMES_MATPLOTLIB_WOULD_PARSE = ["grade $II_$", "a$b$c", "$\\frac{1}{2}$", "x\ny", "back\\$lash"]
PLOTS_OF_CLASSES = [plots.confusion_matrix_plot, plots.per_class_plot]


def _report(names: list[str]) -> dict:
    labels = torch.arange(len(names))
    return classification_report(torch.eye(len(names))[labels] * 3, labels, names)


def _keep_figures(monkeypatch: pytest.MonkeyPatch, save: bool) -> list[Figure]:
    """The figures the plots draw, kept for a look at their text; saved only with `save`."""
    figures: list[Figure] = []
    saved = plots._save

    def keep(figure: Figure, path: Path) -> Path:
        figures.append(figure)
        return saved(figure, path) if save else path

    monkeypatch.setattr(plots, "_save", keep)
    return figures


@pytest.mark.parametrize("plot", PLOTS_OF_CLASSES)
def test_class_names_with_dollar_signs_are_drawn_as_written(plot, tmp_path, monkeypatch):
    drawn = _keep_figures(monkeypatch, save=True)
    path = plot(_report(NAMES_MATPLOTLIB_WOULD_PARSE), tmp_path / "figure.png")
    with Image.open(path) as written:
        assert written.format == "PNG"
    labels = drawn[0].axes[0].get_xticklabels()
    assert [label.get_text() for label in labels] == NAMES_MATPLOTLIB_WOULD_PARSE
    assert not any(label.get_parse_math() or label.get_usetex() for label in labels)


@pytest.mark.parametrize("plot", PLOTS_OF_CLASSES)
def test_class_names_are_not_tex_even_where_a_matplotlibrc_turns_tex_on(
    plot, tmp_path, monkeypatch
):
    drawn = _keep_figures(monkeypatch, save=False)  # the rest of the figure would need LaTeX
    with matplotlib.rc_context({"text.usetex": True}):
        plot(_report(["under_score", "50%", "a & b"]), tmp_path / "figure.png")
    labels = drawn[0].axes[0].get_xticklabels()
    assert [label.get_text() for label in labels] == ["under_score", "50%", "a & b"]
    assert not any(label.get_usetex() for label in labels)


def test_rates_a_test_split_cannot_measure_are_left_out_of_the_per_class_plot(
    tmp_path, monkeypatch
):
    figures = _keep_figures(monkeypatch, save=True)
    labels = torch.tensor([0, 0, 1, 1])  # no third class in the test split
    report = classification_report(torch.eye(3)[labels] * 3, labels, ["a", "b", "c"])
    assert report["per_class"]["c"]["recall"] is None
    path = plots.per_class_plot(report, tmp_path / "per_class.png")
    assert Image.open(path).size[0] > 0
    (axes,) = figures[0].axes
    heights = [bar.get_height() for bar in axes.patches]
    assert len(heights) == 9 and sum(height == 1.0 for height in heights) == 6
