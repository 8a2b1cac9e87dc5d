"""The CoTracker3 predictor against the reference vectors b1-b3, plus invariants at a small resolution."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from smite_ops.tracking.cotracker3 import (
    CoTracker3Offline,
    CoTracker3Predictor,
    CoTrackerInputError,
    TrackerOutput,
    grid_points,
    model_queries,
)

pytestmark = pytest.mark.usefixtures("single_thread")

Vector = dict[str, np.ndarray]
VECTORS = {
    "b1": "predictor_b1_grid5.npz",
    "b2": "predictor_b2_queries_backward.npz",
    "b3": "predictor_b3_grid4_mask_backward.npz",
}


def call_arguments(vector: Vector) -> dict[str, Any]:
    """The predictor keyword arguments stored as ``arg_*`` arrays."""
    kwargs: dict[str, Any] = {}
    for key, value in vector.items():
        if key.startswith("arg_"):
            kwargs[key[4:]] = torch.from_numpy(value) if value.ndim else int(value)
    kwargs["backward_tracking"] = bool(kwargs["backward_tracking"])
    return kwargs


@pytest.fixture
def model_calls(synthetic_model: CoTracker3Offline) -> Iterator[list[tuple[torch.Tensor, TrackerOutput]]]:
    """Records ``(queries, outputs)`` of every model call made while the test runs."""
    calls: list[tuple[torch.Tensor, TrackerOutput]] = []
    handle = synthetic_model.register_forward_hook(lambda _m, args, out: calls.append((args[1], out)))
    yield calls
    handle.remove()


def check_vector(
    name: str,
    synthetic_model: CoTracker3Offline,
    cotracker3_vector: Callable[[str], Vector],
    calls: list[tuple[torch.Tensor, TrackerOutput]],
) -> None:
    vector = cotracker3_vector(VECTORS[name])
    tracks, visibility = CoTracker3Predictor(synthetic_model)(
        torch.from_numpy(vector["video"]), **call_arguments(vector)
    )
    assert len(calls) == (2 if vector["arg_backward_tracking"] else 1)
    for index, (queries, output) in enumerate(calls):
        expected = {f: torch.from_numpy(vector[f"model_call{index}_{f}"]) for f in ("queries", *output._fields)}
        torch.testing.assert_close(queries, expected["queries"], rtol=0.0, atol=1e-5)
        torch.testing.assert_close(output.tracks, expected["tracks"], rtol=0.0, atol=2e-4)
        torch.testing.assert_close(output.visibility, expected["visibility"], rtol=0.0, atol=1e-5)
        torch.testing.assert_close(output.confidence, expected["confidence"], rtol=0.0, atol=1e-5)
    torch.testing.assert_close(tracks, torch.from_numpy(vector["tracks"]), rtol=0.0, atol=2e-4)
    assert torch.equal(visibility, torch.from_numpy(vector["visibility"]))


def test_b1_grid(synthetic_model, cotracker3_vector, model_calls) -> None:
    check_vector("b1", synthetic_model, cotracker3_vector, model_calls)


@pytest.mark.slow
def test_b2_queries_with_support_grid_and_backward(synthetic_model, cotracker3_vector, model_calls) -> None:
    check_vector("b2", synthetic_model, cotracker3_vector, model_calls)


@pytest.mark.slow
def test_b3_masked_grid_with_backward(synthetic_model, cotracker3_vector, model_calls) -> None:
    check_vector("b3", synthetic_model, cotracker3_vector, model_calls)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_model_queries_match_every_reference_call(name: str, cotracker3_vector: Callable[[str], Vector]) -> None:
    vector = cotracker3_vector(VECTORS[name])
    b, t, _, h, w = vector["video"].shape
    built, n_user = model_queries(
        b, (h, w), (384, 512), **{k: v for k, v in call_arguments(vector).items() if k != "backward_tracking"}
    )
    assert n_user == vector["tracks"].shape[2]
    torch.testing.assert_close(built, torch.from_numpy(vector["model_call0_queries"]), rtol=0.0, atol=1e-5)
    if "model_call1_queries" in vector:  # backward pass: times reversed, positions unchanged
        reversed_call = torch.from_numpy(vector["model_call1_queries"])
        torch.testing.assert_close(reversed_call[..., 0], t - 1 - built[..., 0], rtol=0.0, atol=0.0)
        torch.testing.assert_close(reversed_call[..., 1:], built[..., 1:], rtol=0.0, atol=0.0)


def test_grid_points_layout() -> None:
    assert torch.equal(grid_points(1, (384, 512)), torch.tensor([[256.0, 192.0]]))
    grid = grid_points(6, (384, 512))
    assert grid.shape == (36, 2)
    assert torch.equal(grid[0], torch.tensor([8.0, 8.0])) and torch.equal(grid[-1], torch.tensor([504.0, 376.0]))
    assert torch.equal(grid[1], torch.tensor([8.0 + 496 / 5, 8.0]))  # x runs fastest


@pytest.fixture(scope="module")
def small_predictor(synthetic_state_dict: dict[str, torch.Tensor]) -> CoTracker3Predictor:
    """The synthetic-weight model run at 64x96 instead of 384x512 (cheap; not conformance)."""
    model = CoTracker3Offline(model_resolution=(64, 96))
    model.load_state_dict(synthetic_state_dict)
    return CoTracker3Predictor(model.eval(), iters=1)


@pytest.fixture(scope="module")
def small_video(cotracker3_vector: Callable[[str], Vector]) -> torch.Tensor:
    return torch.from_numpy(cotracker3_vector(VECTORS["b1"])["video"])[:, :4]


def test_backward_pass_only_changes_frames_before_each_query(small_predictor, small_video) -> None:
    queries = torch.tensor([[[0.0, 5.0, 7.0], [2.0, 31.5, 23.5], [3.0, 60.0, 40.0]]])
    forward_tracks, forward_vis = small_predictor(small_video, queries=queries)
    both_tracks, both_vis = small_predictor(small_video, queries=queries, backward_tracking=True)
    after = torch.arange(4)[:, None] >= queries[0, :, 0]  # (T, N)
    assert torch.equal(both_tracks[0][after], forward_tracks[0][after])
    assert torch.equal(both_vis[0][after], forward_vis[0][after])
    assert not torch.equal(both_tracks[0][~after], forward_tracks[0][~after])
    at_query = both_tracks[0, queries[0, :, 0].long(), torch.arange(3)]
    torch.testing.assert_close(at_query, queries[0, :, 1:], rtol=0.0, atol=1e-4)
    assert bool(both_vis[0, queries[0, :, 0].long(), torch.arange(3)].all())


def test_batch_equals_stacked_single_calls(small_predictor, small_video) -> None:
    video = torch.cat([small_video, small_video.flip(1, -1)])
    queries = torch.tensor([[[0.0, 5.0, 7.0], [3.0, 40.0, 20.0]], [[1.0, 60.0, 44.0], [3.0, 0.0, 0.0]]])
    tracks, visibility = small_predictor(video, queries=queries, backward_tracking=True)
    for i in range(2):
        single_tracks, single_vis = small_predictor(
            video[i : i + 1], queries=queries[i : i + 1], backward_tracking=True
        )
        torch.testing.assert_close(tracks[i : i + 1], single_tracks, rtol=0.0, atol=1e-4)
        assert torch.equal(visibility[i : i + 1], single_vis)


def test_invalid_arguments_raise(small_predictor, small_video) -> None:
    with pytest.raises(CoTrackerInputError, match="not both"):
        small_predictor(small_video, queries=torch.zeros(1, 1, 3), grid_size=3)
    with pytest.raises(CoTrackerInputError, match="grid_size > 0"):
        small_predictor(small_video)
    masks = torch.stack([torch.ones(1, 48, 64), torch.zeros(1, 48, 64)])
    with pytest.raises(CoTrackerInputError, match="same for every batch element"):
        small_predictor(small_video.expand(2, -1, -1, -1, -1), segm_mask=masks, grid_size=3)
