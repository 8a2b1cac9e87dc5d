"""Loading CoTracker3 checkpoints: .pth / .safetensors / fsspec round trips and one-line errors."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest
import safetensors.torch
import torch

from smite_ops.tracking.cotracker3 import CheckpointError, CoTracker3Offline, load_cotracker3, read_state_dict


def assert_same_weights(model: CoTracker3Offline, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def test_round_trips_through_pth_and_safetensors_url(
    tmp_path: Path, synthetic_state_dict: dict[str, torch.Tensor]
) -> None:
    """The only test that writes the full state dict (100 MB, the real model's size) in each format."""
    pth = tmp_path / "scaled_offline.pth"
    torch.save(synthetic_state_dict, pth)
    model = load_cotracker3(str(pth))
    assert not model.training
    assert_same_weights(model, synthetic_state_dict)

    memory = fsspec.filesystem("memory")
    memory.pipe("/cotracker3/weights.safetensors", safetensors.torch.save(synthetic_state_dict))
    try:
        model = load_cotracker3("memory://cotracker3/weights.safetensors", device="cpu")
    finally:
        memory.rm("/cotracker3", recursive=True)
    assert_same_weights(model, synthetic_state_dict)


def test_training_wrapper_and_module_prefix_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "training_checkpoint.pth"
    weight = torch.arange(6.0).view(2, 3)
    torch.save({"model": {"module.corr_mlp.fc1.weight": weight}, "total_steps": 7}, path)
    state = read_state_dict(str(path))
    assert list(state) == ["corr_mlp.fc1.weight"] and torch.equal(state["corr_mlp.fc1.weight"], weight)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.pth"
    with pytest.raises(CheckpointError, match=f"^{path}: checkpoint file not found$"):
        load_cotracker3(str(path))


def test_wrong_keys_list_the_first_missing_and_unexpected_keys(tmp_path: Path) -> None:
    path = tmp_path / "other_model.pth"
    torch.save({"fnet.conv1.weight": torch.zeros(64, 3, 7, 7), "head.weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError) as caught:
        load_cotracker3(str(path))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: not a CoTracker3 offline checkpoint")
    assert "missing keys (187): time_emb, fnet.conv1.bias, fnet.layer1.0.conv1.weight, ..." in message
    assert "unexpected keys (1): head.weight" in message


def test_online_time_embedding_is_a_shape_error(tmp_path: Path) -> None:
    path = tmp_path / "online.safetensors"
    state = {key: value for key, value in CoTracker3Offline().state_dict().items() if key != "time_emb"}
    safetensors.torch.save_file({**state, "time_emb": torch.zeros(1, 16, 1110)}, path)
    with pytest.raises(CheckpointError, match=r"wrong shapes \(1\): time_emb \(1, 16, 1110\) != \(1, 60, 1110\)"):
        load_cotracker3(str(path))


@pytest.mark.parametrize("name", ["garbage.pth", "garbage.safetensors"])
def test_unreadable_files_name_the_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match=f"^{path}: not a readable .* checkpoint") as caught:
        load_cotracker3(str(path))
    assert "\n" not in str(caught.value)


def test_a_tensor_instead_of_a_state_dict_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="does not hold a state dict of tensors"):
        load_cotracker3(str(path))
