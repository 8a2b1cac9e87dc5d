"""Print how far our production code is from the official SMITE code on each conformance vector.

Relative error = max |ours - official| / max |official| (tests/conformance/vectors, made by
tools/reference_vectors). Also prints the issue-18 alternatives (per-frame group norms, pixel-centre
projection, our frequency low-pass) on the same vectors. Run from the repository root:
``PYTHONPATH=$PWD .venv/bin/python -m benchmarks.conformance_errors``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conformance.helpers import load_vector
from conformance.sd21_tiny import write_sd21_tiny
from conformance.test_official_vectors import OFFICIAL_SCALE

from smite_ops.backbone import load_backbone
from smite_ops.losses import SmiteLoss
from smite_ops.lowpass import lowpass, lowpass_energy, lowpass_mask
from smite_ops.unet_maps import MapOptions, MapRunner
from smite_ops.voting import project_to_grid, vote


def relative(ours: np.ndarray, official: np.ndarray) -> float:
    return float(np.abs(np.asarray(ours, np.float64) - official).max() / np.abs(official).max())


def clip_rows(root: Path) -> list[tuple[str, float]]:
    vector = load_vector("unet_clip")
    rows = []
    for pooled in (True, False):
        runner = MapRunner(load_backbone(str(root)), cross_frame=True, pooled_group_norm=pooled,
                           options=MapOptions(attention_scale=OFFICIAL_SCALE, chunk_size=None))
        with torch.no_grad():
            eps = runner.predict(torch.from_numpy(vector["latents"]), int(vector["timestep"]),
                                 torch.from_numpy(vector["conditioning"]), vector["latents"].shape[0])
            parts = vector["cross_logits"].shape[1]
            outputs = {"eps": eps, "cross_logits": runner.cross_logits(parts),
                       "was_inference": runner.inference_maps(parts), "was_training": runner.training_maps(parts)[1]}
        runner.close()
        label = "" if pooled else " (group norms per frame)"
        rows += [(f"unet_clip {key}{label}", relative(value.numpy(), vector[key])) for key, value in outputs.items()]
    return rows


def voting_rows() -> list[tuple[str, float]]:
    vector = load_vector("voting_512")
    points, visible = torch.from_numpy(vector["points"]), torch.from_numpy(vector["visible"])
    rows = []
    for rounding in ("official", "pixel_centre"):
        cells, valid = project_to_grid(points, visible, (512, 512), (64, 64), rounding)
        voted = vote(torch.from_numpy(vector["maps"]), cells, valid, 15)
        rows.append((f"voting_512 ({rounding} projection)", relative(voted.numpy(), vector["voted"])))
    return rows


def dct_rows() -> list[tuple[str, float]]:
    vector = load_vector("dct_lowpass")
    maps, reference = torch.from_numpy(vector["maps"]), torch.from_numpy(vector["reference"])
    frames, _, side, _ = maps.shape
    mask = lowpass_mask(frames, side, side, float(vector["threshold"]))
    filtered = lowpass(maps.movedim(1, 0), mask).movedim(0, 1)
    return [("dct_lowpass lowpassed", relative(filtered.numpy(), vector["lowpassed"])),
            ("dct_lowpass energy", relative(lowpass_energy(maps, reference, mask).numpy(), vector["energy"]))]


def loss_rows() -> list[tuple[str, float]]:
    vector = load_vector("losses")
    rows = []
    for quirk in (True, False):
        inputs = {key: torch.from_numpy(vector[key]) for key in ("cross_logits", "was_train", "eps_pred")}
        terms = SmiteLoss(freq_reference_quirk=quirk)(
            inputs["cross_logits"], inputs["was_train"], torch.from_numpy(vector["mask"]), inputs["eps_pred"],
            torch.from_numpy(vector["eps"]), int(vector["epoch"]),
        )
        label = "reference mode" if quirk else "production low-pass"
        rows.append((f"losses loss_freq ({label})", relative(terms.frequency.numpy(), vector["loss_freq"])))
        rows.append((f"losses total ({label})", relative(terms.total.numpy(), vector["total"])))
    return rows


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sd21-tiny"
        write_sd21_tiny(root)
        rows = clip_rows(root) + voting_rows() + dct_rows() + loss_rows()
    print(f"| {'vector':<52} | relative error |\n|{'-' * 54}|---------------:|")
    for name, error in rows:
        print(f"| {name:<52} | {error:14.2e} |")


if __name__ == "__main__":
    main()
