"""How much part structure a backbone's features carry: a linear-probe ceiling on the synthetic benchmark.

SMITE reads parts off the UNet with cross-attention: a class logit is a learned key dotted with the query
``q`` at each map cell, i.e. a linear readout of the captured queries (METHOD.md §2.4). So a multinomial
logistic regression on those queries, fitted on the reference images, bounds what the learned tokens and K/V
can reach on the test videos. For every dataset and working resolution the harness

1. runs the backbone (no part model; the conditioning is the encoded part prompt) once per image at timestep
   ``--timestep`` and concatenates the captured queries of all cross-attention capture layers (or those of
   ``--layer-sizes``: native map sides in cells), resized to the map size (``resolution / 8``), as per-cell
   features;
2. fits the probe on the reference images (standardised features, Adam, cross-entropy with a small L2 term)
   against the masks resized with nearest to the map size;
3. scores it on frames of the first test video (every 6th annotated frame, at most 8), with the probe's logits
   resized bilinearly to the native size, and prints mIoU (reference convention, %) next to the map-resolution
   ceiling (the ground truth down-sampled to the map size by area, then up-sampled: what a perfect map reaches).

Run from the repository root::

    .venv/bin/python -m benchmarks.feature_probe --bench /tmp/synth/a [--resolutions 256 512] [--datasets ...]
    .venv/bin/python -m benchmarks.feature_probe --bench /tmp/synth/heldout --kinds heldout --backbone DIR

``--backbone`` probes another diffusers-format backbone (e.g. one written by
:mod:`pipeline.training.pretrain_tiny`); the benchmark options are those of :mod:`benchmarks.synth_bench`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.synth_bench import add_bench_arguments, dataset_names, ensure_bench_or_exit
from pipeline.evaluation.smite50 import read_ground_truth
from pipeline.io.references import load_reference_set
from pipeline.io.video import read_frames
from pipeline.method.backbone_source import backbone_source
from smite_ops.backbone import load_backbone
from smite_ops.conditioning import encode_part_prompt
from smite_ops.errors import InputError
from smite_ops.learning import nearest_mask
from smite_ops.metrics import miou
from smite_ops.segmentation import resize, to_unit_range
from smite_ops.unet_maps import MapRunner

PROBE_STEPS = 500
PROBE_LR = 1e-2
PROBE_L2 = 1e-4
TEST_STRIDE, TEST_FRAMES = 6, 8
PROBE_TIMESTEP = 100
"""Noise level of the probed pass (the default of ``--timestep``)."""


class QueryFeatures:
    """Per-cell features of images: the captured cross-attention queries of one noisy UNet pass.

    Args:
        runner: a map runner on the backbone (single-frame attention).
        conditioning: ``(L, D)`` prompt embedding.
        resolution: working resolution in pixels; maps are ``resolution / 8`` cells a side.
        timestep: the noise level of the pass.
    """

    def __init__(
        self, runner: MapRunner, conditioning: Tensor, resolution: int, timestep: int,
        layer_sizes: frozenset[int] | None = None,
    ) -> None:
        self.runner, self.conditioning = runner, conditioning
        self.resolution, self.timestep, self.layer_sizes = resolution, timestep, layer_sizes
        self.generator = torch.Generator().manual_seed(0)

    @property
    def map_size(self) -> int:
        return self.resolution // 8

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Tensor:
        """``(H, W, 3)`` uint8 -> ``(C, s, s)`` float32 with ``C`` = sum of heads x head dim over capture layers."""
        pixels = to_unit_range(torch.from_numpy(np.array(image)).permute(2, 0, 1)[None])
        latents = self.runner.encode(resize(pixels, (self.resolution, self.resolution)), self.generator)
        noisy, _ = self.runner.add_noise(latents, self.timestep, self.generator)
        self.runner.predict(noisy, self.timestep, self.conditioning, num_frames=1)
        capture = self.runner.video.capture
        try:
            maps = capture.query_maps((self.map_size, self.map_size), heights=self.layer_sizes)
        except ValueError:
            sides = sorted({height for _, _, (height, _) in capture.cross_layers()})
            raise InputError(f"--layer-sizes {sorted(self.layer_sizes or ())}: the capture layers at "
                             f"{self.resolution} px have map sides {sides}") from None
        finally:
            self.runner.release()
        return maps[0].float()


def fit_probe(features: Tensor, labels: Tensor, num_classes: int) -> torch.nn.Module:
    """Multinomial logistic regression on ``(N, C, s, s)`` features against ``(N, s, s)`` labels.

    Features are standardised with the training statistics (folded into the returned module).
    """
    flat = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    mean, std = flat.mean(0), flat.std(0) + 1e-6
    linear = torch.nn.Linear(flat.shape[1], num_classes)
    optimizer = torch.optim.Adam(linear.parameters(), lr=PROBE_LR)
    inputs, targets = (flat - mean) / std, labels.reshape(-1)
    for _ in range(PROBE_STEPS):
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(inputs), targets) + PROBE_L2 * linear.weight.pow(2).sum()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        linear.weight /= std
        linear.bias -= linear.weight @ mean
    return linear.requires_grad_(False)


def probe_labels(probe: torch.nn.Module, features: Tensor, size: tuple[int, int]) -> np.ndarray:
    """Labels ``(N, H, W)`` of ``(N, C, s, s)`` features: the probe's logits resized bilinearly to ``size``."""
    logits = probe(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False).argmax(1).numpy()


def resolution_ceiling(labels: np.ndarray, num_classes: int, map_size: int) -> float:
    """mIoU (%) of ``(N, H, W)`` labels after an area down-sampling to ``map_size`` and a bilinear way back."""
    one_hot = F.one_hot(torch.from_numpy(labels).long(), num_classes).permute(0, 3, 1, 2).float()
    small = F.interpolate(one_hot, size=(map_size, map_size), mode="area")
    back = F.interpolate(small, size=labels.shape[-2:], mode="bilinear", align_corners=False).argmax(1).numpy()
    return miou(back, labels, num_classes).reference


def probe_dataset(
    dataset: Path, runner: MapRunner, resolutions: list[int], timestep: int, layer_sizes: frozenset[int] | None = None
) -> dict[int, dict[str, float]]:
    """Probe train / test mIoU and the map-resolution ceiling of one dataset, per working resolution.

    ``runner`` wraps a backbone loaded with its text encoder (it encodes the part prompt); ``layer_sizes``
    restricts the features to the capture layers of those native map sides (default: all).
    """
    references = load_reference_set(str(dataset / "references"))
    backbone = runner.backbone
    conditioning, _ = encode_part_prompt(backbone.text_encoder, backbone.tokenizer, references.part_names)
    num_classes = references.num_parts
    video_id = json.loads((dataset / "dataset.json").read_text())["videos"][0]
    truth = read_ground_truth(dataset / "gt" / video_id, num_classes)
    frames = read_frames(str(dataset / "videos" / f"{video_id}.mp4"))
    picks = list(range(0, len(truth.frame_indices), TEST_STRIDE))[:TEST_FRAMES]
    test_y = truth.labels[picks]

    scores = {}
    for resolution in resolutions:
        features = QueryFeatures(runner, conditioning, resolution, timestep, layer_sizes)
        size = features.map_size
        train_x = torch.stack([features(image) for image in references.images])
        train_y = torch.stack(
            [nearest_mask(torch.from_numpy(np.array(mask)).long(), size) for mask in references.masks]
        )
        probe = fit_probe(train_x, train_y, num_classes)
        test_x = torch.stack([features(frames[truth.frame_indices[i]]) for i in picks])
        scores[resolution] = {
            "train": miou(probe_labels(probe, train_x, (size, size)), train_y.numpy(), num_classes).reference,
            "test": miou(probe_labels(probe, test_x, test_y.shape[-2:]), test_y, num_classes).reference,
            "ceiling": resolution_ceiling(test_y, num_classes, size),
        }
    return scores


def probe_runner(backbone: str) -> MapRunner:
    """A map runner on ``backbone`` ('tiny' or a diffusers folder) for single frames (no cross-frame attention)."""
    return MapRunner(load_backbone(backbone_source(backbone), with_text_encoder=True), cross_frame=False)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_bench_arguments(parser)
    parser.add_argument("--datasets", nargs="*", help="dataset folder names (default: all)")
    parser.add_argument("--resolutions", nargs="*", type=int, default=[256, 512], help="working resolutions (px)")
    parser.add_argument("--timestep", type=int, default=PROBE_TIMESTEP)
    parser.add_argument("--layer-sizes", nargs="*", type=int,
                        help="probe only the capture layers of these native map sides in cells (default: all)")
    parser.add_argument("--backbone", default="tiny", help="'tiny' (the embedded backbone) or a diffusers folder")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"command: python -m benchmarks.feature_probe {shlex.join(sys.argv[1:])}")
    ensure_bench_or_exit(parser, args)
    names = dataset_names(args)
    print("| dataset | resolution | probe mIoU, references (%) | probe mIoU, test video (%) | map-size ceiling (%) |")
    print("|---|---:|---:|---:|---:|")
    runner = probe_runner(args.backbone)
    layer_sizes = frozenset(args.layer_sizes) if args.layer_sizes else None
    try:
        for name in names:
            scores_by_resolution = probe_dataset(args.bench / name, runner, args.resolutions, args.timestep,
                                                 layer_sizes)
            for resolution, scores in scores_by_resolution.items():
                print(f"| {name} | {resolution} | {scores['train']:.1f} | {scores['test']:.1f} | "
                      f"{scores['ceiling']:.1f} |", flush=True)
    except InputError as err:
        parser.error(str(err))
    finally:
        runner.close()


if __name__ == "__main__":
    main()
