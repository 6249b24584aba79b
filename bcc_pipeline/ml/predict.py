"""Classify image files with a saved checkpoint, using the preprocessing stored inside it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from bcc_pipeline.data.images import model_input
from bcc_pipeline.ml.checkpoint import load_classifier


def predict_files(checkpoint: Path | str, paths: Iterable[Path | str]) -> Iterator[dict]:
    """One result per path, in order: the class and its probabilities, or the error."""
    module, payload = load_classifier(checkpoint)
    class_names, size = payload["class_names"], payload["image_size"]
    for path in paths:
        try:
            pixels = torch.from_numpy(model_input(Path(path).read_bytes(), size))[None]
        except (OSError, ValueError) as err:  # unreadable, not an image, too large
            yield {"path": str(path), "error": f"{type(err).__name__}: {err}"}
            continue
        with torch.inference_mode():
            probabilities = torch.softmax(module(pixels).float(), dim=1)[0].tolist()
        best = max(range(len(class_names)), key=probabilities.__getitem__)
        yield {
            "path": str(path),
            "prediction": class_names[best],
            "probabilities": dict(zip(class_names, probabilities, strict=True)),
        }
