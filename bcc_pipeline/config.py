"""The run config of the assets that take one (ops.<asset>.config): one module that the
assets, the resources and the launch check all import, so that none of them imports another to
read a setting."""

import dagster as dg
from pydantic import Field

from bcc_pipeline.data.near_duplicates import HASH_BITS
from bcc_pipeline.data.split import IDENTICAL_ONLY, NEAR_DUPLICATE_DISTANCE
from bcc_pipeline.ml.settings import TrainingSettings


class SplitConfig(dg.Config):
    seed: int = Field(
        default=42,
        ge=0,
        description=(
            "Seed of the split, 0 or more; same manifest + seed = same split. Changing it (or a "
            "fraction, or near_duplicate_distance) re-draws the split on purpose: images may "
            "move."
        ),
    )
    train_fraction: float = Field(default=0.7, description="Share of each class for training.")
    val_fraction: float = Field(default=0.2, description="Share for validation (early stopping).")
    test_fraction: float = Field(default=0.1, description="Share held out for the test report.")
    near_duplicate_distance: int = Field(
        default=NEAR_DUPLICATE_DISTANCE,
        ge=IDENTICAL_ONLY,
        le=HASH_BITS - 1,
        description=(
            "Images whose 256-bit perceptual hashes differ in at most this many bits are treated "
            "as near-duplicates and kept in one split; -1 groups byte-identical files only. "
            "Re-encoded or rescaled copies differ by 0-6 bits, distinct slices by 8 or more."
        ),
    )

    @property
    def fractions(self) -> dict[str, float]:
        return {"train": self.train_fraction, "val": self.val_fraction, "test": self.test_fraction}


MAX_IMAGE_SIZE = 1024
"""Above this a run would not finish in useful time: a ViT's attention grows with the fourth
power of the side (vit_tiny at 2048 px made no progress in 5 minutes on a CPU), and the tensors
with its square (3 MiB an image at 1024 px)."""


class TensorsConfig(dg.Config):
    image_size: int = Field(
        default=224,
        ge=1,
        le=MAX_IMAGE_SIZE,
        description=(
            "Side of the square images the model sees. The backbone decides which sizes work "
            "(checked at launch): pretrained ViTs need their own (224 for vit_b_16), vit_tiny "
            f"any multiple of 16 from 32, other models at least 32. At most {MAX_IMAGE_SIZE}."
        ),
    )


class TrainingConfig(dg.Config, TrainingSettings):
    """The training settings (bcc_pipeline.ml.settings) as the asset's run config."""
