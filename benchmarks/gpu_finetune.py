"""Full fine-tuning against the training-step ceiling: the pipeline's fit_classifier with
every block trainable (trainable_blocks -1, bf16-mixed, batch 64) over a training_job's own
tensors, against a bare training loop of the same network on input already on the device.

(i)  ceiling: the whole network (the pipeline's ClassifierNet: normalisation, backbone, head)
     on uint8 input already on the device, float32 weights under bfloat16 autocast (what
     Lightning's bf16-mixed does), cross-entropy, backward, Adam step; batch --batch-size, after
     warm-up, timed between device synchronisations;
(ii) pipeline: fit_classifier with weights none, trainable_blocks -1, batch --batch-size,
     --epochs epochs (patience as long, so every epoch runs), precision bf16-mixed; its
     images_per_second: training images x epochs over trainer.fit seconds, which include the
     validation passes and the checkpoints, as a run pays them.

Target (issue 10): (ii) >= 60% of (i), judged on a CUDA GPU only. Exit status 1 when missed.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from bench_common import (
    calls_per_second,
    markdown_table,
    print_header,
    report_targets,
    share_of_ceiling,
    write_result,
)

TARGET_RATIO = 0.60


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=Path, required=True, help="a preprocessed_tensors folder")
    parser.add_argument("--backbone", default="vit_b_16")
    parser.add_argument("--accelerator", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--batch-size", type=int, default=64, help="training batch, both")
    parser.add_argument("--epochs", type=int, default=3, help="fit_classifier epochs")
    parser.add_argument("--warmup", type=int, default=5, help="untimed ceiling steps")
    parser.add_argument("--iterations", type=int, default=20, help="timed ceiling steps")
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "bcc-finetune", help="scratch"
    )
    parser.add_argument("--result-json", type=Path, default=None, help="write the numbers here")
    return parser


def ceiling_images_per_second(
    net: Any, device: Any, args: argparse.Namespace, image_size: int
) -> float:
    """Training images/s of a bare bf16-autocast loop over the whole network."""
    import torch
    import torch.nn.functional as F

    net = net.to(device).train()
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    shape = (args.batch_size, 3, image_size, image_size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    labels = torch.randint(0, net.head.out_features, (args.batch_size,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(net(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    rate = calls_per_second(step, device, args.warmup, args.iterations)
    return rate * args.batch_size


def main(argv: list[str] | None = None) -> int:
    from bcc_pipeline.data.tensors import TensorSplits
    from bcc_pipeline.ml.devices import TrainerDevice
    from bcc_pipeline.ml.network import build_network
    from bcc_pipeline.ml.settings import DeviceSettings, TrainingSettings
    from bcc_pipeline.ml.training import fit_classifier

    parser = build_parser()
    args = parser.parse_args(argv)
    print_header("gpu_finetune: full fine-tuning vs the training-step ceiling", parser, args)
    device = TrainerDevice.resolve(
        DeviceSettings(accelerator=args.accelerator, precision="bf16-mixed")
    )
    tensors = TensorSplits.open(args.tensors)
    classes = len(tensors.class_names)
    net = build_network(classes, tensors.image_size, args.backbone, "none", -1)
    ceiling = ceiling_images_per_second(net, device.torch_device, args, tensors.image_size)
    del net
    print(f"(i) ceiling: {ceiling:.0f} images/s", flush=True)

    settings = TrainingSettings(
        backbone=args.backbone,
        weights="none",
        trainable_blocks=-1,
        max_epochs=args.epochs,
        early_stopping_patience=args.epochs,
        batch_size=args.batch_size,
    )
    args.work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="finetune-", dir=args.work) as work:
        result = fit_classifier(tensors, settings, device, Path(work), log=print)
    pipeline = result.images_per_second
    ratio = pipeline / ceiling
    n_train = len(tensors.labels("train"))
    print("\n## Results (measured)\n")
    print(
        markdown_table(
            [
                {
                    "measurement": f"(i) ceiling: fwd+bwd+Adam, bf16 autocast, batch "
                    f"{args.batch_size}",
                    "images": args.iterations * args.batch_size,
                    "seconds": args.iterations * args.batch_size / ceiling,
                    "images/s": ceiling,
                },
                {
                    "measurement": f"(ii) fit_classifier, trainable_blocks -1, bf16-mixed, "
                    f"{result.epochs_run} epochs, validation included",
                    "images": result.epochs_run * n_train,
                    "seconds": result.train_seconds,
                    "images/s": pipeline,
                },
            ]
        )
    )
    write_result(
        args.result_json,
        {
            "ceiling_images_per_second": ceiling,
            "pipeline_images_per_second": pipeline,
            "ratio": ratio,
            "epochs_run": result.epochs_run,
            "train_seconds": result.train_seconds,
            "used_feature_cache": result.used_feature_cache,
        },
    )
    return report_targets(
        [
            share_of_ceiling(
                "full fine-tuning / fwd+bwd ceiling",
                pipeline,
                ceiling,
                TARGET_RATIO,
                judged=device.accelerator == "gpu",
            )
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
