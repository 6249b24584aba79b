"""Classify image files with a saved checkpoint, using the preprocessing stored inside it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from bcc_pipeline.data.images import ImageRejected, model_input, read_image_file
from bcc_pipeline.data.manifest import printable
from bcc_pipeline.ml.calibration import calibrated_probabilities
from bcc_pipeline.ml.checkpoint import CheckpointError, load_classifier, stored_temperature
from bcc_pipeline.ml.explain import (
    Explainer,
    explanation_caption,
    map_file_name,
    write_explanations,
)


def predict_files(
    checkpoint: Path | str,
    paths: Iterable[Path | str],
    *,
    uncertain_below: float,
    explain_dir: Path | None = None,
) -> Iterator[dict]:
    """One result per path, in order: the class, its calibrated probabilities (the checkpoint's
    temperature; 1.0 for older files) and whether the top one is below `uncertain_below`, or
    the file's status (empty, not_an_image, unreadable, too_large) and why in words. A bad file
    never stops the images after it. With `explain_dir`, each classified image also gets an
    explanation map there (see explain.py), named in its result. Paths in results are valid
    UTF-8 (see printable), so that the JSON printed from them is too."""
    module, payload = load_classifier(checkpoint)
    class_names, size = payload["class_names"], payload["image_size"]
    temperature = stored_temperature(payload)
    # A backbone without a map fails here, before any image.
    explainer = Explainer(module, torch.device("cpu")) if explain_dir is not None else None
    if explainer is not None:
        module = explainer.network  # one float32 copy of the network in memory, not two
    for index, path in enumerate(paths):
        shown = printable(str(path))
        try:
            pixels = torch.from_numpy(model_input(read_image_file(path), size))[None]
        except ImageRejected as err:
            yield {"path": shown, "status": err.status, "error": str(err)}
            continue
        if explainer is None:
            with torch.inference_mode():
                logits, coarse_map = module(pixels), None
        else:  # the map comes with the prediction's forward pass where it can
            logits, coarse_map = explainer.predict(pixels.numpy())
        probabilities = calibrated_probabilities(logits, temperature)[0].tolist()
        # Loading checked the temperature and normalisation: NaN here comes from the weights.
        if not all(map(math.isfinite, probabilities)):
            raise CheckpointError(
                f"{checkpoint} gives no probabilities (NaN) for {shown}: its weights are damaged"
            )
        best = max(range(len(class_names)), key=probabilities.__getitem__)
        result = {
            "path": shown,
            "prediction": class_names[best],
            "probabilities": dict(zip(class_names, probabilities, strict=True)),
            "uncertain": probabilities[best] < uncertain_below,
        }
        if explainer is not None:
            caption = explanation_caption(
                class_names[best], probabilities[best], name=Path(path).name
            )
            file = explain_dir / map_file_name(index, str(path))
            write_explanations(explainer, pixels.numpy(), [caption], [file], coarse_map)
            result["explanation"] = printable(str(file))
        yield result
