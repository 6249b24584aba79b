"""Classify image files with a saved checkpoint, using the preprocessing stored inside it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from bcc_pipeline.data.images import ImageRejected, model_input, read_image_file
from bcc_pipeline.ml.checkpoint import load_classifier


def predict_files(checkpoint: Path | str, paths: Iterable[Path | str]) -> Iterator[dict]:
    """One result per path, in order: the class and its probabilities, or the file's status
    (empty, not_an_image, unreadable, too_large) and why in words. A bad file never stops
    the images after it."""
    module, payload = load_classifier(checkpoint)
    class_names, size = payload["class_names"], payload["image_size"]
    for path in paths:
        try:
            pixels = torch.from_numpy(model_input(read_image_file(path), size))[None]
        except ImageRejected as err:
            yield {"path": str(path), "status": err.status, "error": str(err)}
            continue
        with torch.inference_mode():
            probabilities = torch.softmax(module(pixels).float(), dim=1)[0].tolist()
        best = max(range(len(class_names)), key=probabilities.__getitem__)
        yield {
            "path": str(path),
            "prediction": class_names[best],
            "probabilities": dict(zip(class_names, probabilities, strict=True)),
        }
