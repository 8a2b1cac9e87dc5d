"""Conformance of the offline CoTracker3 model with the reference vectors a1 and a2, plus invariants."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from smite_ops.tracking.cotracker3 import CoTracker3Offline, CoTrackerInputError, TrackerOutput

pytestmark = pytest.mark.usefixtures("single_thread")

TRACKS_ATOL = 2e-4
PROB_ATOL = 1e-5

Vector = dict[str, np.ndarray]


def assert_close(actual: torch.Tensor, expected: np.ndarray, atol: float) -> None:
    torch.testing.assert_close(actual, torch.from_numpy(expected), rtol=0.0, atol=atol)


@pytest.fixture(scope="module")
def a1(cotracker3_vector: Callable[[str], Vector]) -> Vector:
    return cotracker3_vector("model_a1_b1_t12_96x128.npz")


@pytest.fixture(scope="module")
def a1_iterations(synthetic_model: CoTracker3Offline, a1: Vector, single_thread: None) -> list[TrackerOutput]:
    video, queries = torch.from_numpy(a1["video"]), torch.from_numpy(a1["queries"])
    with torch.no_grad():
        return list(synthetic_model.iterate(video, queries, iters=int(a1["iters"])))


def test_a1_outputs_of_every_iteration(a1: Vector, a1_iterations: list[TrackerOutput]) -> None:
    assert len(a1_iterations) == 6
    for index, output in enumerate(a1_iterations):
        assert_close(output.tracks, a1["tracks_per_iter"][index], TRACKS_ATOL)
        assert_close(output.visibility, a1["visibility_per_iter"][index], PROB_ATOL)
        assert_close(output.confidence, a1["confidence_per_iter"][index], PROB_ATOL)
    final = a1_iterations[-1]  # what forward() returns
    assert_close(final.tracks, a1["tracks"], TRACKS_ATOL)
    assert_close(final.visibility, a1["visibility"], PROB_ATOL)
    assert_close(final.confidence, a1["confidence"], PROB_ATOL)


def test_a1_intermediates(synthetic_model: CoTracker3Offline, a1: Vector) -> None:
    video, queries = torch.from_numpy(a1["video"]), torch.from_numpy(a1["queries"])
    with torch.no_grad():
        raw = synthetic_model.fnet(2.0 * (video[0, :1] / 255.0) - 1.0)[0]
        state = synthetic_model.prepare(video, queries)
        tokens = synthetic_model.transformer_input(state)
        delta = synthetic_model.updateformer(tokens)
    assert_close(raw, a1["debug_fnet_raw_frame0"], 1e-4)
    assert_close(tokens, a1["debug_updateformer_input_iter0"], 2e-5)
    assert_close(delta, a1["debug_updateformer_output_iter0"], 1e-5)


def test_a2_batch_of_two_in_one_call_matches_stacked_reference(
    synthetic_model: CoTracker3Offline, cotracker3_vector: Callable[[str], Vector]
) -> None:
    a2 = cotracker3_vector("model_a2_b2_t8_64x96.npz")
    video, queries = torch.from_numpy(a2["video"]), torch.from_numpy(a2["queries"])
    with torch.no_grad():
        batched = synthetic_model(video, queries)  # default iters (4), as the vector
    # The expected arrays are two stacked single-sample reference calls.
    assert_close(batched.tracks, a2["tracks"], TRACKS_ATOL)
    assert_close(batched.visibility, a2["visibility"], PROB_ATOL)
    assert_close(batched.confidence, a2["confidence"], PROB_ATOL)


def test_permuting_queries_permutes_tracks(synthetic_model: CoTracker3Offline, a1: Vector) -> None:
    video = torch.from_numpy(a1["video"])[:, :4, :, :64, :96]
    queries = torch.tensor([[[0.0, 10.0, 12.0], [3.0, 50.5, 33.25], [1.0, 95.0, 0.0]]])
    order = torch.tensor([2, 0, 1])
    with torch.no_grad():
        plain = synthetic_model(video, queries, iters=2)
        permuted = synthetic_model(video, queries[:, order], iters=2)
    torch.testing.assert_close(permuted.tracks, plain.tracks[:, :, order], rtol=0.0, atol=1e-4)
    torch.testing.assert_close(permuted.visibility, plain.visibility[:, :, order], rtol=0.0, atol=1e-6)


def test_frame_chunked_correlation_matches_whole(synthetic_state_dict: dict[str, torch.Tensor], a1: Vector) -> None:
    model = CoTracker3Offline()
    model.load_state_dict(synthetic_state_dict)
    video = torch.from_numpy(a1["video"])[:, :5, :, :64, :96]
    queries = torch.tensor([[[0.0, 10.0, 12.0], [3.0, 50.5, 33.25]]])
    with torch.no_grad():
        whole = model(video, queries, iters=1)
        model.corr_element_budget = 1  # one frame at a time
        chunked = model(video, queries, iters=1)
    # Same arithmetic per frame; only matrix-multiply blocking (float32 rounding) may differ.
    torch.testing.assert_close(chunked.tracks, whole.tracks, rtol=0.0, atol=1e-5)
    torch.testing.assert_close(chunked.visibility, whole.visibility, rtol=0.0, atol=1e-6)


@pytest.mark.parametrize(
    ("video_shape", "queries_shape", "message"),
    [
        ((1, 4, 3, 62, 96), (1, 2, 3), "multiples of 4"),
        ((1, 4, 3, 28, 96), (1, 2, 3), "at least 32"),
        ((1, 4, 64, 96), (1, 2, 3), "video must be"),
        ((1, 4, 3, 64, 96), (2, 2, 3), "queries must be"),
    ],
)
def test_bad_shapes_raise_one_line_errors(
    video_shape: tuple[int, ...], queries_shape: tuple[int, ...], message: str
) -> None:
    model = CoTracker3Offline()
    with pytest.raises(CoTrackerInputError, match=message):
        model(torch.zeros(video_shape), torch.zeros(queries_shape))


def test_query_frame_out_of_range_raises() -> None:
    with pytest.raises(CoTrackerInputError, match=r"query frames must lie in \[0, 3\]"):
        CoTracker3Offline()(torch.zeros(1, 4, 3, 32, 32), torch.tensor([[[4.0, 1.0, 1.0]]]))
