"""Tiny generated datasets shared by the tests; everything runs offline on the CPU."""

import io
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bcc_pipeline.data.manifest import scan_folder
from bcc_pipeline.data.split import split_fingerprint, stratified_group_split
from bcc_pipeline.data.tensors import MappedArray, TensorSplits, write_tensor_splits
from bcc_pipeline.sample_data import KAGGLE_SUBDIR, generate_sample_dataset

CLASSES = ["brain_glioma", "brain_menin", "brain_tumor"]
FRACTIONS = {"train": 0.7, "val": 0.2, "test": 0.1}
REPORT_KEYS = {
    # report.json's keys are a contract: other people's scripts read them.
    "accuracy",
    "accuracy_ci95",
    "loss",
    "macro_f1",
    "class_names",
    "per_class",
    "confusion_matrix",
    "n_test",
    "macro_auroc",
    "macro_auroc_ci95",
    "ece",
    "ece_uncalibrated",
    "temperature",
}
PER_CLASS_KEYS = {
    "precision",
    "recall",
    "f1",
    "support",
    "auroc",
    "sensitivity",
    "specificity",
    "sensitivity_ci95",
    "specificity_ci95",
}


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Kaggle layout, 30 synthetic 128-px images per class; read-only for tests."""
    out = tmp_path_factory.mktemp("sample")
    generate_sample_dataset(out, per_class=30, size=128, seed=1)
    return out


def add_bad_files(root: Path) -> dict[str, str]:
    """Stray and broken files a real download picks up; returns relative path -> status."""
    classes = root / KAGGLE_SUBDIR
    glioma = classes / "brain_glioma"
    good = next(glioma.glob("*.jpg")).read_bytes()
    (glioma / "empty.jpg").write_bytes(b"")
    (glioma / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (glioma / "saved_page.jpg").write_text("<html><body>Kaggle login</body></html>")
    (glioma / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(60))
    (classes / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(40))
    (root / "README.txt").write_text("downloaded from kaggle")

    grey16 = (np.linspace(0, 60000, 96 * 96).reshape(96, 96)).astype(np.uint16)
    Image.fromarray(grey16).save(classes / "brain_menin" / "sixteen_bit.png")
    rgba = np.zeros((80, 100, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    Image.fromarray(rgba).save(classes / "brain_tumor" / "with_alpha.png")
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64), 90, dtype=np.uint8)).convert("P").save(buffer, "BMP")
    (classes / "brain_tumor" / "palette.bmp").write_bytes(buffer.getvalue())
    prefix = KAGGLE_SUBDIR.as_posix()
    return {
        f"{prefix}/brain_glioma/empty.jpg": "empty",
        f"{prefix}/brain_glioma/truncated.jpg": "unreadable",
        f"{prefix}/brain_glioma/saved_page.jpg": "not_an_image",
        f"{prefix}/brain_glioma/Thumbs.db": "os_file",
        f"{prefix}/.DS_Store": "os_file",
        "README.txt": "not_an_image",
        f"{prefix}/brain_menin/sixteen_bit.png": "ok",
        f"{prefix}/brain_tumor/with_alpha.png": "ok",
        f"{prefix}/brain_tumor/palette.bmp": "ok",
    }


@pytest.fixture
def messy_root(sample_root: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The sample plus stray and broken files; a private copy the test may change."""
    root = tmp_path / "messy"
    shutil.copytree(sample_root, root)
    return root, add_bad_files(root)


@pytest.fixture(scope="session")
def sample_tensors(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> TensorSplits:
    """Preprocessed 32-px tensors of the sample, as the trainer reads them."""
    manifest = scan_folder(sample_root)
    table = stratified_group_split(manifest, FRACTIONS, seed=0).table
    out = tmp_path_factory.mktemp("tensors")
    write_tensor_splits(table, sample_root, out, 32, split_fingerprint(table))
    return TensorSplits.open(out)


def tiny_net(image_size: int = 32, trainable_blocks: int = 0, seed: int = 0):
    """A randomly initialised vit_tiny classifier for the three classes."""
    import torch

    from bcc_pipeline.ml.network import build_network

    torch.manual_seed(seed)
    return build_network(len(CLASSES), image_size, "vit_tiny", "none", trainable_blocks).eval()


def save_tiny_checkpoint(path: Path, net=None, extra: dict | None = None, **fields) -> Path:
    """A checkpoint file as vit_checkpoint writes it, of `net` (a fresh tiny_net by default)."""
    import torch

    from bcc_pipeline.ml.checkpoint import save_checkpoint

    net = net if net is not None else tiny_net()
    options = {
        "class_names": CLASSES,
        "image_size": int(net.backbone.image_size),
        "backbone": "vit_tiny",
        "weights": "none",
        "inference_dtype": torch.float32,
        **fields,
    }
    return save_checkpoint(path, net, **options, extra=extra or {})


@pytest.fixture
def no_reads_through_the_map(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slicing a MappedArray fails: a pass that reads its batches through the map (whose
    pages would stay resident for the whole split) fails the test."""

    def no_slicing(self: MappedArray, index: object) -> None:
        raise AssertionError("a batch was read through the map")

    monkeypatch.setattr(MappedArray, "__getitem__", no_slicing)


@pytest.fixture
def googlenet_in_torch_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """GoogLeNet's DEFAULT weights file (random values) in a temporary torch cache, as a
    download leaves it (with the auxiliary classifiers' weights); downloading fails."""
    import torch
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    url = torchvision.models.GoogLeNet_Weights.DEFAULT.url
    cached = tmp_path / "hub" / "checkpoints" / Path(url).name
    cached.parent.mkdir(parents=True)
    network = torchvision.models.googlenet(aux_logits=True, init_weights=True)
    torch.save(network.state_dict(), cached)
    return cached


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its tables made, for tests to copy: MLflow's schema
    migrations take seconds per new database."""
    from mlflow import MlflowClient

    database = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{database}").search_experiments()
    return database


def mlflow_store_at(database: Path, empty_db: Path) -> str:
    """A fresh, empty MLflow store at `database`; returns its tracking URI."""
    database.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(empty_db, database)
    return f"sqlite:///{database}"


@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "4m") mounted at `folder` for the block: a disk that fills up.
    Mounting needs root; elsewhere the test is skipped."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
