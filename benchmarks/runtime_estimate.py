"""GPU run-time ESTIMATES for the production backbone, from FLOP counts (nothing runs on a GPU).

The FLOPs of one SD-2.1-base UNet forward (64 x 64 latent, 77 text tokens) and one VAE encoding (512 x 512) are
counted with :class:`torch.utils.flop_counter.FlopCounterMode` on the meta device (no weights, no compute).
The job's costs are then counted in those units, from ``configs/smite.yaml``:

* training: per reference image and epoch, one VAE encoding and the UNet forward and backward (a backward
  counts two forwards) for the conditional and the unconditional branch (classifier-free guidance);
* segmentation, unguided: per frame, one VAE encoding and one UNet forward (windows do not overlap);
* segmentation, guided (the default): ~187 UNet frame-forward equivalents per frame (README, "Temporal
  consistency"), plus the VAE encoding.

Seconds = FLOPs / sustained throughput; the throughputs below are assumptions (about 40 % of the dense
bf16 peak), so every number is an estimate, typically a lower bound (data movement, attention capture and
stitching are not counted). Run::

    .venv/bin/python -m benchmarks.runtime_estimate [--references 10] [--epochs 300] [--frames 48]
"""

from __future__ import annotations

import argparse

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.window_cost import SD21_UNET, SD_VAE

SUSTAINED_TFLOPS = {"A100 (bf16, ~40 % of 312)": 125.0, "H100 SXM (bf16, ~40 % of 989)": 400.0}
GUIDED_FRAME_FORWARDS = 187


def unit_flops() -> tuple[float, float]:
    """FLOPs of one UNet forward (one frame) and one VAE encoding (one 512 x 512 image)."""
    with torch.device("meta"), torch.no_grad():
        unet = UNet2DConditionModel(**SD21_UNET).eval()
        vae = AutoencoderKL(**SD_VAE).eval()
        with FlopCounterMode(display=False) as counter:
            unet(torch.randn(1, 4, 64, 64), torch.tensor([10]), encoder_hidden_states=torch.randn(1, 77, 1024))
        unet_flops = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            vae.encode(torch.randn(1, 3, 512, 512))
        vae_flops = counter.get_total_flops()
    return float(unet_flops), float(vae_flops)


def _seconds(value: float) -> str:
    return f"~{value:.0f} s" if value >= 10 else f"~{value:.2g} s"


def main(argv: list[str] | None = None) -> None:
    """Print the FLOP counts and the estimated GPU times (markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--references", type=int, default=10, help="reference images")
    parser.add_argument("--epochs", type=int, default=300, help="training epochs (configs/smite.yaml)")
    parser.add_argument("--frames", type=int, default=48, help="frames of the video to segment")
    args = parser.parse_args(argv)
    unet, vae = unit_flops()
    jobs = {
        f"train, {args.references} references x {args.epochs} epochs": args.references * args.epochs
        * (vae + 2 * 3 * unet),
        f"segment {args.frames} frames, unguided": args.frames * (vae + unet),
        f"segment {args.frames} frames, guided (default)": args.frames * (vae + GUIDED_FRAME_FORWARDS * unet),
    }
    print(f"UNet forward, one 512 px frame: {unet / 1e12:.2f} TFLOP; VAE encoding: {vae / 1e12:.2f} TFLOP")
    print("| job | TFLOP | " + " | ".join(f"{gpu} (estimate)" for gpu in SUSTAINED_TFLOPS) + " |")
    print("|---|---:|" + "---:|" * len(SUSTAINED_TFLOPS))
    for job, flops in jobs.items():
        times = " | ".join(_seconds(flops / 1e12 / rate) for rate in SUSTAINED_TFLOPS.values())
        print(f"| {job} | {flops / 1e12:,.0f} | {times} |")


if __name__ == "__main__":
    main()
