"""The seed recipe, as the blog wrote it: the baseline every speedup is measured against.

torchvision ImageFolder over the Kaggle layout, Resize(224) + random flip + ToTensor +
Normalize(0.5) on every image in every epoch (train, val and test alike), a frozen vit_b_16
with a new 3-class head, Adam 1e-4, batch 16, up to 10 epochs with early stopping (patience 3
on val_loss), a 70/20/10 random_split, float32, a Lightning Trainer; then trainer.test.

Times, in this process: everything before trainer.fit (imports included, from the script's
first line), trainer.fit, trainer.test. The backbone has RANDOM weights (nothing can be
downloaded here): timings do not depend on the weights, the accuracy does. No target of its
own: bench_training.py and gpu_check.py compare the pipeline with it.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the heavy imports, which are part of the recipe's cost

import argparse  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench_common import (  # noqa: E402
    GIB,
    SPLIT_SEED,
    add_generated_dataset_flags,
    ensure_generated_dataset,
    markdown_table,
    print_header,
    write_result,
)

from bcc_pipeline.sample_data import KAGGLE_SUBDIR  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_generated_dataset_flags(parser, Path("/tmp/bcc-bench/training/data_40x3_512px"))
    parser.add_argument("--epochs", type=int, default=10, help="max_epochs")
    parser.add_argument("--patience", type=int, default=3, help="early-stopping patience")
    parser.add_argument("--batch-size", type=int, default=16, help="batch of every loader")
    parser.add_argument("--image-size", type=int, default=224, help="Resize target")
    parser.add_argument(
        "--backbone",
        default="vit_b_16",
        choices=["vit_b_16", "vit_tiny"],
        help="vit_b_16 (the recipe); vit_tiny (the pipeline's small ViT) for quick checks",
    )
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/bcc-bench/seed"), help="Lightning's folder"
    )
    parser.add_argument("--result-json", type=Path, default=None, help="write the numbers here")
    return parser


def seed_backbone(name: str, num_classes: int, image_size: int) -> Any:
    """Torchvision vit_b_16 with random weights (the blog loaded ImageNet weights), every
    parameter frozen, a new trainable heads.head. vit_tiny: the pipeline's small ViT."""
    import torchvision
    from torch import nn

    from bcc_pipeline.ml.backbones import load_backbone

    if name == "vit_b_16":
        model = torchvision.models.vit_b_16(weights=None)
    else:
        model, _ = load_backbone(name, "none", image_size)
    model.requires_grad_(False)
    model.heads.head = nn.Linear(model.heads.head.in_features, num_classes)
    return model


def run_recipe(args: argparse.Namespace) -> dict[str, Any]:
    """The blog's code, kept as it was (including what the pipeline fixes: val and test get
    the training transform, one unstratified split, the last epoch is tested)."""
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import EarlyStopping
    from torch import nn
    from torch.utils.data import DataLoader, random_split
    from torchvision import datasets, transforms

    pl.seed_everything(SPLIT_SEED, verbose=False)
    transform = transforms.Compose(
        [
            transforms.Resize((args.image_size, args.image_size)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
        ]
    )
    dataset = datasets.ImageFolder(str(args.data / KAGGLE_SUBDIR), transform=transform)
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    train, val, test = random_split(dataset, [0.7, 0.2, 0.1], generator=generator)

    def loader(subset: Any, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            subset, batch_size=args.batch_size, shuffle=shuffle, num_workers=args.workers
        )

    class SeedClassifier(pl.LightningModule):
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model
            self.criterion = nn.CrossEntropyLoss()
            self.test_correct = 0
            self.test_seen = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)

        def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
            images, labels = batch
            logits = self(images)
            loss = self.criterion(logits, labels)
            correct = (logits.argmax(dim=1) == labels).sum()
            self.log(f"{stage}_loss", loss, on_epoch=True, prog_bar=True)
            self.log(f"{stage}_acc", correct / len(labels), on_epoch=True, prog_bar=True)
            if stage == "test":
                self.test_correct += int(correct)
                self.test_seen += len(labels)
            return loss

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
            return self._step(batch, "train")

        def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
            self._step(batch, "val")

        def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
            self._step(batch, "test")

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.model.parameters(), lr=1e-4)

    module = SeedClassifier(seed_backbone(args.backbone, len(dataset.classes), args.image_size))
    shutil.rmtree(args.work, ignore_errors=True)
    trainer = pl.Trainer(
        accelerator=args.accelerator,
        devices=1,
        max_epochs=args.epochs,
        callbacks=[EarlyStopping(monitor="val_loss", patience=args.patience)],
        default_root_dir=args.work,
        enable_progress_bar=False,
    )
    before_fit = time.perf_counter() - STARTED
    start = time.perf_counter()
    trainer.fit(module, loader(train, shuffle=True), loader(val))
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    trainer.test(module, loader(test), verbose=False)
    test_seconds = time.perf_counter() - start
    return {
        "counts": {"train": len(train), "val": len(val), "test": len(test)},
        "epochs_run": trainer.current_epoch,
        "before_fit_seconds": before_fit,
        "fit_seconds": fit_seconds,
        "test_seconds": test_seconds,
        "test_accuracy": module.test_correct / max(module.test_seen, 1),
        "torch_threads": torch.get_num_threads(),
    }


def peak_rss_bytes() -> int:
    """Largest resident set of this process or of any DataLoader worker it waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, workers) * 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.data, args.work = args.data.expanduser().resolve(), args.work.expanduser().resolve()
    print_header("bench_seed: the blog's seed recipe", parser, args)
    if args.backbone != "vit_b_16":
        print(f"NOTE: backbone {args.backbone}: a quick check of this script, not the baseline.")
    ensure_generated_dataset(args)
    result = run_recipe(args)
    result["process_seconds"] = time.perf_counter() - STARTED
    result["peak_rss_bytes"] = peak_rss_bytes()
    n = result["counts"]
    print(
        f"\nrandom_split: {n['train']}/{n['val']}/{n['test']} train/val/test; "
        f"{result['epochs_run']} epochs run; {result['torch_threads']} torch threads; "
        f"{args.workers} loader workers; {args.accelerator}. Test accuracy is of the last "
        "epoch's weights, as the blog evaluated it.\n"
    )
    print("## Results (measured)\n")
    print(
        markdown_table(
            [
                {"part": "imports, data, model, Trainer", "seconds": result["before_fit_seconds"]},
                {"part": "trainer.fit", "seconds": result["fit_seconds"]},
                {"part": "trainer.test", "seconds": result["test_seconds"]},
                {"part": "whole script", "seconds": result["process_seconds"]},
            ]
        )
    )
    print(
        f"\nTrain images x epochs / fit seconds: "
        f"{n['train'] * result['epochs_run'] / result['fit_seconds']:.1f} images/s; test "
        f"accuracy {result['test_accuracy']:.3f}; peak RSS {result['peak_rss_bytes'] / GIB:.2f} "
        "GiB (largest single process)."
    )
    write_result(args.result_json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
