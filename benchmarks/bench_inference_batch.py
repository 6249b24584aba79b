"""Inference batch size on this CPU: the frozen backbone's forward per image at several batch
sizes, against the batch the pipeline chooses (inference_batch_size), for each backbone and
image size given.

The backbone runs as the feature cache runs it: an eval-mode copy with its weights in the
device's inference dtype (bfloat16 where oneDNN has native bfloat16), under
torch.inference_mode, on random uint8 images. Within a setup the batch sizes are measured in
interleaved rounds (every size once per round) so that a slow patch of the machine does not
land on one size; each cell is the median over the rounds.

Target (exit status 1 when missed), per setup: the pipeline's batch within 5% of the fastest
measured batch, per image.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench_common import Target, markdown_table, print_header, report_targets, write_result

TOLERANCE = 1.05


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--setups",
        default="vit_b_16@224,vit_tiny@224,vit_tiny@96",
        help="comma-separated backbone@image_size pairs",
    )
    parser.add_argument(
        "--batches", default="4,8,16,32,64,128,256", help="comma-separated batch sizes to measure"
    )
    parser.add_argument(
        "--images", type=int, default=64, help="images per measurement (at least one batch)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--result-json", type=Path, default=None, help="write the numbers here")
    return parser


def measure(
    backbone: str, image_size: int, batches: list[int], args: argparse.Namespace
) -> tuple[int, dict[int, list[float]]]:
    """The pipeline's batch for this setup, and seconds per image of each batch, each round."""
    import torch

    from bcc_pipeline.ml.devices import TrainerDevice
    from bcc_pipeline.ml.network import build_network, inference_batch_size, inference_copy
    from bcc_pipeline.ml.settings import DeviceSettings

    device = TrainerDevice.resolve(DeviceSettings(accelerator="cpu"))
    net = build_network(3, image_size, backbone, "none", 0)
    frozen = inference_copy(net, device.torch_device, device.inference_dtype)
    chosen = inference_batch_size(frozen, device.torch_device)
    batches = sorted({*batches, chosen})
    images = {
        batch: torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8)
        for batch in batches
    }
    seconds: dict[int, list[float]] = {batch: [] for batch in batches}
    with torch.inference_mode():
        for batch in batches:  # first calls set up oneDNN's kernels for each shape
            frozen.frozen_features(images[batch])
        for _ in range(args.rounds):
            for batch in batches:
                calls = max(1, args.images // batch)
                start = time.perf_counter()
                for _ in range(calls):
                    frozen.frozen_features(images[batch])
                seconds[batch].append((time.perf_counter() - start) / (calls * batch))
    return chosen, seconds


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    print_header("bench_inference_batch: the frozen backbone per image by batch size", parser, args)
    import torch

    from bcc_pipeline.ml.devices import TrainerDevice
    from bcc_pipeline.ml.settings import DeviceSettings

    device = TrainerDevice.resolve(DeviceSettings(accelerator="cpu"))
    batches = [int(b) for b in args.batches.split(",")]
    print(
        f"{device.inference_dtype}, {torch.get_num_threads()} torch "
        f"threads; {args.images} images per measurement (or one batch), {args.rounds} rounds.",
        flush=True,
    )
    targets, results = [], {}
    for setup in args.setups.split(","):
        backbone, size = setup.split("@")
        chosen, seconds = measure(backbone, int(size), batches, args)
        per_image = {batch: statistics.median(values) for batch, values in seconds.items()}
        fastest = min(per_image, key=per_image.__getitem__)
        print(f"\n## {backbone} at {size} px (measured)\n")
        print(
            markdown_table(
                [
                    {
                        "batch": f"{batch}{' (pipeline)' if batch == chosen else ''}",
                        "ms per image, median": 1000 * per_image[batch],
                        "each round": " / ".join(f"{1000 * s:.1f}" for s in seconds[batch]),
                        "vs fastest": per_image[batch] / per_image[fastest],
                    }
                    for batch in seconds
                ]
            ),
            flush=True,
        )
        ratio = per_image[chosen] / per_image[fastest]
        targets.append(
            Target(
                f"{backbone} at {size} px: the pipeline's batch ({chosen}) vs the fastest "
                f"measured ({fastest}), per image",
                f"{1000 * per_image[chosen]:.2f} / {1000 * per_image[fastest]:.2f} ms = "
                f"{ratio:.3f}",
                f"<= {TOLERANCE}",
                ratio <= TOLERANCE,
            )
        )
        results[setup] = {"chosen": chosen, "seconds_per_image": seconds}
    write_result(args.result_json, results)
    return report_targets(targets)


if __name__ == "__main__":
    raise SystemExit(main())
