"""Learned part model artifact: round trip, mismatch errors, and the token splice."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from smite_ops.conditioning import PartTokens
from smite_ops.part_model import PartModel, PartModelError, load_part_model, save_part_model

PARTS = ["background", "body", "wheel"]


def _model() -> PartModel:
    generator = torch.Generator().manual_seed(0)
    return PartModel(
        part_names=PARTS,
        base_model="tiny",
        base_hash="f" * 64,
        resolution=256,
        conditioning=torch.randn(77, 32, generator=generator),
        tokens=torch.randn(2, 32, generator=generator),
        unet_weights={"layer.weight": torch.randn(4, 3, generator=generator)},
        info={"epoch": 12, "validation_miou": 71.5},
    )


def test_round_trip(tmp_path: Path) -> None:
    save_part_model(_model(), str(tmp_path / "m"))
    loaded = load_part_model(str(tmp_path / "m"), expect_base_hash="f" * 64, expect_parts=PARTS)
    original = _model()
    assert loaded.part_names == PARTS and loaded.resolution == 256 and loaded.info == original.info
    assert torch.equal(loaded.conditioning, original.conditioning)
    assert torch.equal(loaded.unet_weights["layer.weight"], original.unet_weights["layer.weight"])
    assert loaded.model_id == original.model_id and loaded.model_id.startswith("ffffffffffff-")


def test_model_id_carries_twelve_hex_digits_of_the_backbone_hash() -> None:
    model = _model()
    model.base_hash = "sha256:0123456789abcdef" + "0" * 48
    base, weights = model.model_id.split("-")
    assert base == "0123456789ab" and len(weights) == 12 and int(weights, 16) >= 0


def _edit_manifest(folder: Path, **changes: object) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del manifest[key]
        else:
            manifest[key] = value
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"parts": ["background", "body", "wheel", "mirror"]}, "2 trained part tokens, but the manifest lists 4 parts"),
        ({"parts": ["background", "body"]}, "2 trained part tokens, but the manifest lists 2 parts"),
        ({"parts": None}, "'parts' must list at least two part names, got None"),
        ({"parts": ["body", "background", "wheel"]}, "'background' first"),
        ({"parts": ["background", "body", "body"]}, "must be unique names"),
        ({"resolution": 256.5}, "'resolution' must be a positive integer (pixels), got 256.5"),
        ({"resolution": "256"}, "'resolution' must be a positive integer (pixels), got '256'"),
        ({"base_model": "tiny"}, "'base_model' must hold the strings 'source' and 'content_hash'"),
        ({"trained_unet_parameters": ["other.weight"]}, "differ from the manifest's list ['other.weight']"),
        ({"info": [1]}, "'info' must be a JSON object"),
    ],
)
def test_manifests_are_validated_against_the_weights(tmp_path: Path, changes: dict, problem: str) -> None:
    save_part_model(_model(), str(tmp_path / "m"))
    _edit_manifest(tmp_path / "m", **changes)
    with pytest.raises(PartModelError) as info:
        load_part_model(str(tmp_path / "m"))
    assert problem in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith(str(tmp_path / "m"))


def test_apply_to_unet_copies_weights_and_rejects_misfits() -> None:
    layer = nn.Module()
    layer.layer = nn.Linear(3, 4, bias=False)
    _model().apply_to_unet(layer)
    assert torch.equal(layer.layer.weight, _model().unet_weights["layer.weight"])
    wrong = _model()
    wrong.unet_weights = {"layer.weight": torch.zeros(2, 2)}
    with pytest.raises(PartModelError, match=r"layer.weight \(2, 2\) does not fit"):
        wrong.apply_to_unet(layer)


def test_mismatched_base_or_parts_are_refused(tmp_path: Path) -> None:
    save_part_model(_model(), str(tmp_path / "m"))
    with pytest.raises(PartModelError, match="manifest.json: trained on base model tiny"):
        load_part_model(str(tmp_path / "m"), expect_base_hash="0" * 64)
    with pytest.raises(PartModelError, match=r"parts \['background', 'body', 'wheel'\] differ"):
        load_part_model(str(tmp_path / "m"), expect_parts=["background", "body"])


def test_missing_and_corrupt_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(PartModelError, match="nowhere/manifest.json: not found"):
        load_part_model(str(tmp_path / "nowhere"))
    save_part_model(_model(), str(tmp_path / "m"))
    (tmp_path / "m" / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(PartModelError, match="weights.safetensors: unreadable weights"):
        load_part_model(str(tmp_path / "m"))
    manifest = tmp_path / "m" / "manifest.json"
    manifest.write_text(json.dumps({"format": "other"}))
    with pytest.raises(PartModelError, match="unsupported format 'other'"):
        load_part_model(str(tmp_path / "m"))


def test_part_tokens_splice_positions_one_to_p_minus_one() -> None:
    base = torch.arange(10 * 4, dtype=torch.float32).reshape(10, 4)
    tokens = PartTokens(base, torch.full((2, 4), -1.0))
    out = tokens()
    assert tokens.num_parts == 3 and out.shape == (10, 4)
    assert torch.equal(out[0], base[0]) and torch.equal(out[3:], base[3:])
    assert bool((out[1:3] == -1).all())
    out.sum().backward()
    assert tokens.tokens.grad is not None and bool((tokens.tokens.grad == 1).all())
