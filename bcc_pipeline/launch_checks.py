"""The launch check: a run's config, read the way each asset will read it, checked before any
work. It finds every mistake that needs no data (a misspelt backbone, weights that need another
image size or cannot be downloaded, a GPU that is not there, fractions that do not sum to 1,
an artifacts root that cannot be written) and says them all at once, each with its place in
the run config, instead of failing minutes later inside the step that first uses the setting."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pydantic

from bcc_pipeline.errors import ConfigError

if TYPE_CHECKING:  # the resources call these checks: no import back at run time
    from bcc_pipeline.resources import (
        AcceleratorResource,
        ArtifactsResource,
        DatasetResource,
        QualityGatesResource,
    )

MANIFEST, SPLIT, TENSORS, TRAINING = (
    "raw_image_manifest",
    "stratified_split",
    "preprocessed_tensors",
    "vit_checkpoint",
)
USES_ACCELERATOR = (TRAINING, "test_metrics_report", "production_model")
M = TypeVar("M", bound=pydantic.BaseModel)


class LaunchCheckError(ConfigError):
    """The run config has problems; the message lists each with its run-config path."""


class _Problems:
    """Collects the problems of one check; each `at(...)` block adds the error it raises."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.settings: set[str] = set()

    def add(self, path: str, err: ConfigError, image_size_path: str | None = None) -> None:
        """Record `err` at `path`.<its setting>. An image_size complaint belongs to the
        tensors' config, where image_size is set."""
        if err.setting == "image_size" and image_size_path:
            where = image_size_path
        else:
            where = f"{path}.{err.setting}" if err.setting else path
        self.settings.add(err.setting or "")
        self.lines.append(f"{where}: {err}")

    @contextmanager
    def at(self, path: str, image_size_path: str | None = None) -> Iterator[None]:
        """Record a ConfigError or a pydantic error (at `path`.<field>) raised in the block."""
        try:
            yield
        except ConfigError as err:
            self.add(path, err, image_size_path)
        except pydantic.ValidationError as err:
            for error in err.errors():
                field = ".".join(str(part) for part in error["loc"])
                self.settings.add(field)
                self.lines.append(f"{path}.{field}: {error['msg']} (got {error['input']!r})")

    def parse(self, path: str, config_class: type[M], values: dict[str, Any]) -> M:
        """The config as the asset will see it. Fields that fail validation are recorded and
        replaced by their defaults, so that the other fields can still be checked."""
        try:
            return config_class(**values)
        except pydantic.ValidationError as err:
            with self.at(path):
                raise
            bad = {str(error["loc"][0]) for error in err.errors() if error["loc"]}
            return config_class(**{k: v for k, v in values.items() if k not in bad})


def _op_config(ops: Mapping[str, Any], name: str) -> dict[str, Any]:
    return dict((ops.get(name) or {}).get("config") or {})


def launch_problems(
    run_config: Mapping[str, Any],
    selected: set[str] | None,
    dataset: DatasetResource,
    artifacts: ArtifactsResource,
    accelerator: AcceleratorResource,
    quality: QualityGatesResource,
) -> list[str]:
    """One line per problem, `<run-config path>: <what is wrong and how to fix it>`; empty when
    the run can start. `selected` holds the step keys the run executes (asset names for
    assets; None: all of them)."""
    from bcc_pipeline.config import SplitConfig, TensorsConfig, TrainingConfig
    from bcc_pipeline.data.split import check_fractions
    from bcc_pipeline.garbage import import_frozen
    from bcc_pipeline.ml.backbones import check_backbone, fetch_weights

    def runs(asset: str) -> bool:
        return selected is None or asset in selected

    problems = _Problems()
    ops = run_config.get("ops") or {}
    for name, resource in (("artifacts", artifacts), ("dataset", dataset), ("quality", quality)):
        for err in resource.problems():
            problems.add(f"resources.{name}.config", err)
    with problems.at("resources.artifacts.config"):
        require_text_path(artifacts.path, "root")
    if runs(MANIFEST):
        with problems.at("resources.dataset.config"):
            check_data_dir(dataset)
        with problems.at("resources.artifacts.config"):
            check_artifacts_outside_data(dataset.path, artifacts.path)
    if runs(SPLIT):
        path = f"ops.{SPLIT}.config"
        split = problems.parse(path, SplitConfig, _op_config(ops, SPLIT))
        with problems.at(path):
            check_fractions(split.fractions)
    image_size = None
    if runs(TENSORS):
        image_size = problems.parse(
            f"ops.{TENSORS}.config", TensorsConfig, _op_config(ops, TENSORS)
        ).image_size
    if runs(TRAINING):
        path = f"ops.{TRAINING}.config"
        settings = problems.parse(path, TrainingConfig, _op_config(ops, TRAINING))
        with problems.at(path, image_size_path=f"ops.{TENSORS}.config.image_size"):
            check_backbone(
                settings.backbone, settings.weights, image_size, settings.trainable_blocks
            )
        if not problems.settings & {"backbone", "weights"}:
            with problems.at(path):
                fetch_weights(settings.backbone, settings.weights)
    if any(runs(asset) for asset in USES_ACCELERATOR):
        with problems.at("resources.accelerator.config"):
            device = accelerator.trainer_device()
            if runs(TRAINING) and device.strategy not in ("auto", "ddp_spawn"):
                # Strategies are Lightning's to know; the default ones it always takes.
                import_frozen("pytorch_lightning")  # training imports it anyway
                device.check_with_lightning()
    return problems.lines


def raise_for_problems(
    run_config: Mapping[str, Any],
    selected: set[str] | None,
    dataset: DatasetResource,
    artifacts: ArtifactsResource,
    accelerator: AcceleratorResource,
    quality: QualityGatesResource,
) -> None:
    lines = launch_problems(run_config, selected, dataset, artifacts, accelerator, quality)
    if lines:
        count = "1 problem" if len(lines) == 1 else f"{len(lines)} problems"
        raise LaunchCheckError(
            f"the run config has {count}; nothing was run:\n" + "\n".join(f"- {x}" for x in lines)
        )


def require_text_path(path: Path, setting: str) -> None:
    """A folder the pipeline names in its reports, metadata and MLflow, all of which need text:
    a path whose bytes are not UTF-8 would fail there, after the training."""
    from bcc_pipeline.data.manifest import is_text, printable

    if not is_text(str(path)):
        raise ConfigError(
            f"the path '{printable(str(path))}' is not valid UTF-8 (made with another code "
            "page?); rename the folder, or link to it from a path that is",
            setting=setting,
        )


def check_data_dir(dataset: DatasetResource) -> None:
    require_text_path(dataset.path, "data_dir")
    if dataset.path.exists() and not dataset.path.is_dir():
        raise ConfigError(
            f"data folder {str(dataset.path)!r} is a file, not a folder; set data_dir (or "
            "BCC_DATA_DIR) to the folder that holds the class folders",
            setting="data_dir",
        )
    if not dataset.path.is_dir():
        from bcc_pipeline.data.manifest import missing_data_dir

        raise ConfigError(missing_data_dir(dataset.path), setting="data_dir")


def check_artifacts_outside_data(data_dir: Path, artifacts_root: Path) -> None:
    """An artifacts root in the data folder would have each scan read the pipeline's own
    outputs (reports, plots, caches) as images, and every run change the data it watches."""
    data, root = data_dir.resolve(), artifacts_root.resolve()
    if root == data or data in root.parents:
        raise ConfigError(
            f"the artifacts root {str(root)!r} is inside the data folder {str(data)!r}: every "
            "scan would read the pipeline's outputs as images; choose a root outside it",
            setting="root",
        )
