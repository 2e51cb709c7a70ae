"""The seed notebook's pipeline, reproduced faithfully for comparison.

Ray's tutorial "Image Classification Batch Inference with PyTorch": ``read_images``
of full-size images, a per-row ``map`` that applies ``ToTensor`` and the model's eval
transform to each image and keeps the original image beside the tensor, a class-based
``map_batches`` over an actor pool (``batch_size=720``), then ``write_parquet`` of the
predicted labels with the original images. The only changes: the model is the one named
(its weights and eval preset from our registry), and the actors ask for CPUs instead of
``num_gpus=1`` so that it runs on a machine without a GPU.

Usage: ``python -m benchmarks.seed_pipeline INPUT_DIR OUTPUT_DIR [--model NAME]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--random-weights", action="store_true", help="random weights (timing only)")
    parser.add_argument("--concurrency", type=int, default=1, help="actors (the tutorial: 4, one per GPU)")
    parser.add_argument("--batch-size", type=int, default=720)
    args = parser.parse_args()
    start = time.perf_counter()

    import ray
    import torch
    from torchvision import transforms

    from batch_classify.models.registry import get_spec, load_model
    from batch_classify.storage import StorageOptions

    spec = get_spec(args.model)
    preset = spec.preset
    transform = transforms.Compose(
        [
            transforms.ToTensor(),
            transforms.Resize(preset.resize_size, antialias=True),
            transforms.CenterCrop(preset.crop_size),
            transforms.Normalize(preset.mean, preset.std),
        ]
    )

    ray.init()
    ds = ray.data.read_images(args.input, mode="RGB")

    def preprocess_image(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"original_image": row["image"], "transformed_image": transform(row["image"])}

    transformed_ds = ds.map(preprocess_image)

    class Model:
        def __init__(self) -> None:
            if args.random_weights:
                self.model = spec.build().eval()
            else:
                self.model = load_model(spec, None, StorageOptions())
            from batch_classify.models.vocabulary import imagenet

            self.names = imagenet().names

        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            torch_batch = torch.from_numpy(batch["transformed_image"])
            with torch.inference_mode():
                prediction = self.model(torch_batch)
                predicted_classes = prediction.argmax(dim=1).detach().cpu()
                predicted_labels = [self.names[i] for i in predicted_classes]
                return {"predicted_label": predicted_labels, "original_image": batch["original_image"]}

    predictions = transformed_ds.map_batches(Model, concurrency=args.concurrency, batch_size=args.batch_size)
    predictions.write_parquet(args.output)
    print(f"seed pipeline: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
