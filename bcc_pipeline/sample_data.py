"""Synthetic brain-MRI-like slices laid out like the Kaggle "Brain Cancer - MRI dataset".

This is SYNTHETIC data for demos and tests only: cartoon slices drawn with numpy, not medical
images, and nothing learned from them says anything about real patients. It exists so that the
pipeline can be exercised end to end (ingest, train, evaluate) without downloading the real
dataset. The three classes differ only in the shape and location of the lesion; global
brightness is normalised identically for every class so that a model cannot shortcut on it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bcc_pipeline.data.images import SYNTHETIC_MARK
from bcc_pipeline.storage import UnwritableDirError, atomic_path, check_writable_dir, work_dir

CLASS_FOLDERS: tuple[str, ...] = ("brain_glioma", "brain_menin", "brain_tumor")
KAGGLE_SUBDIR = Path("Brain_Cancer raw MRI data") / "Brain_Cancer"
MIN_SIZE, MAX_SIZE = 32, 4096
"""Image sides the generator is meant for: below 32 px a lesion is a pixel or two (and 32 is
the smallest model input); one 4096 px slice already takes 1.3 GB of memory to draw."""

# Mean intensity (0..1, whole image) every slice is scaled to before its own random gain, so
# that mean brightness carries no class information.
_REFERENCE_MEAN = 0.22
_JPEG_QUALITY = 90


class OccupiedFolderError(ValueError):
    """The folder for a new sample already holds files: the generator's Kaggle names would
    replace real scans with cartoons, or mix cartoons in with them."""


@dataclass(frozen=True, eq=False)
class _Canvas:
    """Pixel grid plus the brain ellipse (inside the skull) that lesions are placed against."""

    yy: np.ndarray
    xx: np.ndarray
    size: int
    brain: np.ndarray
    cy: float
    cx: float
    ry: float
    rx: float


def _ellipse_radius(
    yy: np.ndarray,
    xx: np.ndarray,
    cy: float,
    cx: float,
    ry: float,
    rx: float,
    angle: float = 0.0,
) -> np.ndarray:
    """Normalised elliptical radius (1 on the boundary), so callers can threshold or perturb it."""
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    dy, dx = yy - cy, xx - cx
    u = (dx * cos_a + dy * sin_a) / rx
    v = (dy * cos_a - dx * sin_a) / ry
    return np.sqrt(u * u + v * v)


def _soft_inside(radius: np.ndarray, edge: float) -> np.ndarray:
    """Anti-aliased inside-mask of a normalised radius; hard edges would alias under rotation."""
    return np.clip((1.0 - radius) / edge + 0.5, 0.0, 1.0)


def _ellipse_mask(
    yy: np.ndarray,
    xx: np.ndarray,
    cy: float,
    cx: float,
    ry: float,
    rx: float,
    angle: float = 0.0,
) -> np.ndarray:
    """Soft ellipse mask with a roughly one-pixel edge."""
    radius = _ellipse_radius(yy, xx, cy, cx, ry, rx, angle)
    return _soft_inside(radius, 1.0 / min(ry, rx))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Coarse noise upsampled bilinearly: a cheap tissue texture without scipy."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    fine = Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(fine, dtype=np.float32)


def _glioma(img: np.ndarray, c: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """Irregular, ring-enhancing intra-axial mass with a diffuse oedema halo."""
    angle = rng.uniform(0.0, 2.0 * math.pi)
    dist = rng.uniform(0.3, 0.65)
    ly, lx = c.cy + dist * c.ry * math.sin(angle), c.cx + dist * c.rx * math.cos(angle)
    r = c.size * rng.uniform(0.06, 0.11)
    orientation = rng.uniform(0.0, math.pi)
    radius = _ellipse_radius(c.yy, c.xx, ly, lx, r * rng.uniform(0.8, 1.2), r, orientation)
    theta = np.arctan2(c.yy - ly, c.xx - lx)
    boundary = np.ones_like(theta)
    for k in range(2, 6):
        boundary += rng.uniform(0.0, 0.12) * np.sin(k * theta + rng.uniform(0.0, 2.0 * math.pi))
    q = radius / boundary
    oedema = rng.choice([-1.0, 1.0]) * rng.uniform(0.12, 0.2)
    extent = rng.uniform(2.0, 2.8)
    img = img + c.brain * oedema * np.clip(1.5 * (extent - q) / (extent - 1.0), 0.0, 1.0) ** 2
    mass = _soft_inside(q, 1.0 / r) * c.brain
    core, rim = rng.uniform(0.2, 0.35), rng.uniform(0.7, 0.85)
    rim_weight = np.clip((q - 0.55) / 0.25, 0.0, 1.0)
    necrosis = 0.08 * _smooth_noise(rng, c.size, 64)
    return img * (1.0 - mass) + mass * (core + (rim - core) * rim_weight + necrosis)


def _meningioma(img: np.ndarray, c: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """Round homogeneous extra-axial mass flattened against the inner skull, without oedema."""
    angle = rng.uniform(0.0, 2.0 * math.pi)
    r = c.size * rng.uniform(0.05, 0.09)
    edge_y, edge_x = c.cy + c.ry * math.sin(angle), c.cx + c.rx * math.cos(angle)
    inward = 0.55 * r / math.hypot(edge_y - c.cy, edge_x - c.cx)
    ly, lx = edge_y + (c.cy - edge_y) * inward, edge_x + (c.cx - edge_x) * inward
    mass = _ellipse_mask(c.yy, c.xx, ly, lx, r, r) * c.brain
    return img * (1.0 - mass) + mass * rng.uniform(0.75, 0.9)


def _pituitary(img: np.ndarray, c: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """Small round midline mass low in the slice, where the sella turcica sits."""
    ly = c.cy + c.ry * rng.uniform(0.45, 0.65)
    lx = c.cx + c.size * rng.normal(0.0, 0.01)
    r = c.size * rng.uniform(0.03, 0.05)
    mass = _ellipse_mask(c.yy, c.xx, ly, lx, r * rng.uniform(0.8, 1.0), r) * c.brain
    return img * (1.0 - mass) + mass * rng.uniform(0.6, 0.72)


_LESIONS = {"brain_glioma": _glioma, "brain_menin": _meningioma, "brain_tumor": _pituitary}


def render_slice(label: str, rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """uint8 (size, size) grayscale slice with a lesion of class `label` (one of CLASS_FOLDERS).

    Head geometry, rotation, contrast and noise are drawn from the same distributions for every
    class, so only the lesion tells the classes apart.
    """
    if label not in _LESIONS:
        raise ValueError(f"unknown class {label!r}; expected one of {CLASS_FOLDERS}")
    yy = np.arange(size, dtype=np.float32)[:, None]
    xx = np.arange(size, dtype=np.float32)[None, :]

    head_ry = size * 0.41 * rng.uniform(0.9, 1.1)
    head_rx = head_ry * 0.82 * rng.uniform(0.9, 1.1)
    head_cy = size / 2 + size * rng.uniform(-0.02, 0.02)
    head_cx = size / 2 + size * rng.uniform(-0.02, 0.02)
    skull = 0.05 * size
    brain_ry, brain_rx = head_ry - skull, head_rx - skull
    head = _ellipse_mask(yy, xx, head_cy, head_cx, head_ry, head_rx)
    brain = _ellipse_mask(yy, xx, head_cy, head_cx, brain_ry, brain_rx)
    canvas = _Canvas(yy, xx, size, brain, head_cy, head_cx, brain_ry, brain_rx)

    texture = 0.05 * _smooth_noise(rng, size, 12) + 0.025 * _smooth_noise(rng, size, 48)
    img = (head - brain) * rng.uniform(0.8, 0.95) + brain * (rng.uniform(0.4, 0.5) + texture)

    # Lateral ventricles: two dark lobes tilted apart, the "butterfly" of an axial slice.
    tilt = rng.uniform(0.3, 0.5)
    vent_ry, vent_rx = brain_ry * rng.uniform(0.18, 0.24), brain_rx * rng.uniform(0.07, 0.1)
    for side in (-1.0, 1.0):
        vent_cx = head_cx + side * 1.6 * vent_rx
        vent = _ellipse_mask(
            yy, xx, head_cy - 0.05 * brain_ry, vent_cx, vent_ry, vent_rx, side * tilt
        )
        img = img * (1.0 - vent) + vent * 0.12

    img = _LESIONS[label](img, canvas, rng)

    rotated = Image.fromarray(img.astype(np.float32)).rotate(
        rng.uniform(-15.0, 15.0), resample=Image.Resampling.BILINEAR, fillcolor=0.0
    )
    img = np.clip(np.asarray(rotated, dtype=np.float32), 0.0, None) ** rng.uniform(0.8, 1.25)
    img *= _REFERENCE_MEAN * rng.uniform(0.9, 1.1) / img.mean()
    img += rng.normal(0.0, rng.uniform(0.01, 0.035), img.shape).astype(np.float32)
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def create_sample_dataset(
    out_dir: Path | str, per_class: int = 40, size: int = 512, seed: int = 0
) -> Path:
    """generate_sample_dataset into a new or empty folder, whole or not at all: drawn in a
    scratch folder beside OUT (storage.work_dir), renamed to OUT when complete, removed if
    anything (Ctrl-C, a full disk) stops it first, so OUT never holds a partial sample that a
    later run would take for a dataset. A folder holding any file is an OccupiedFolderError;
    return the class-folder parent, as generate_sample_dataset does."""
    target = Path(out_dir).resolve()  # "." has no name to put a sibling beside
    if target.exists() and not target.is_dir():
        raise UnwritableDirError(f"cannot write to {out_dir}: it is a file, not a folder")
    occupant = _first_file(target) if target.exists() else None
    if occupant is not None:
        raise OccupiedFolderError(
            f"{out_dir} already holds files ({occupant}); the synthetic sample goes only into a "
            "new or empty folder, so that its cartoons never replace or mix with real scans"
        )
    check_writable_dir(target.parent)
    with work_dir(target.parent) as scratch:
        staging = scratch / target.name
        generate_sample_dataset(staging, per_class, size, seed)
        _move_into_place(staging, target, out_dir)
    return Path(out_dir) / KAGGLE_SUBDIR


def _move_into_place(staging: Path, target: Path, out_dir: Path | str) -> None:
    """Rename `staging` to `target`, which may be an empty folder (or hold only empty ones)."""
    try:
        if target.exists():  # rmdir fails on a folder that got a file since it was looked at
            for folder, names, _ in os.walk(target, topdown=False):
                for name in names:
                    os.rmdir(os.path.join(folder, name))
        staging.rename(target)
    except OSError as err:
        raise UnwritableDirError(
            f"cannot put the finished sample at {out_dir}: {err.strerror or err}"
        ) from None


def _first_file(folder: Path) -> Path | None:
    """Something beneath `folder` that is not a folder (a link to one counts), or None."""
    for parent, folders, names in os.walk(folder):
        links = [name for name in folders if os.path.islink(os.path.join(parent, name))]
        if names or links:
            return Path(parent) / [*names, *links][0]
    return None


def generate_sample_dataset(
    out_dir: Path | str, per_class: int = 40, size: int = 512, seed: int = 0
) -> Path:
    """Write OUT/Brain_Cancer raw MRI data/Brain_Cancer/<class>/<class>_0001.jpg ...; return the
    class-folder parent (OUT/Brain_Cancer raw MRI data/Brain_Cancer).

    Each image has its own RNG seeded by (seed, class, index), so output is byte-reproducible and
    a smaller per_class yields a prefix of a larger one. Every JPEG carries SYNTHETIC_MARK as
    its comment. Writes into OUT as it is: files of the same names are replaced, so a larger
    per_class grows an earlier sample (create_sample_dataset is the one for a user's folder).
    A folder that cannot be written is an UnwritableDirError naming it and why.
    """
    root = Path(out_dir) / KAGGLE_SUBDIR
    for label in CLASS_FOLDERS:
        class_dir = root / label
        check_writable_dir(class_dir)
        for i in range(1, per_class + 1):
            write_slice(class_dir, label, i, size, seed)
    return root


def image_name(label: str, number: int) -> str:
    """The file name of image `number` (from 1) of class `label`, as in the Kaggle download."""
    return f"{label}_{number:04d}.jpg"


def write_slice(class_dir: Path, label: str, number: int, size: int, seed: int = 0) -> Path:
    """Image `number` (from 1) of class `label`, drawn from its own seed (seed, class, number)
    and written atomically as class_dir/<label>_<number:04d>.jpg: so the images of a dataset
    can be written in any order, by any process, and come out byte for byte the same."""
    rng = np.random.default_rng([seed, CLASS_FOLDERS.index(label), number])
    path = class_dir / image_name(label, number)
    with atomic_path(path) as tmp:
        Image.fromarray(render_slice(label, rng, size)).save(
            tmp, format="JPEG", quality=_JPEG_QUALITY, comment=SYNTHETIC_MARK
        )
    return path
