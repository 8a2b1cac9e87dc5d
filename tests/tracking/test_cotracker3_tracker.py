"""``CoTracker3Tracker``: the ``PointTracker`` contract, against the predictor and the b2 vector."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from smite_ops.tracking import PointTracker, Tracks
from smite_ops.tracking.cotracker3 import CoTracker3Offline, CoTracker3Predictor, CoTracker3Tracker, CoTrackerInputError

pytestmark = pytest.mark.usefixtures("single_thread")

QUERIES = torch.tensor([[0.0, 5.0, 7.0], [2.0, 31.5, 23.5], [3.0, 60.0, 40.0]])


@pytest.fixture(scope="module")
def small_model(synthetic_state_dict: dict[str, torch.Tensor]) -> CoTracker3Offline:
    """The synthetic-weight model run at 64x96 instead of 384x512 (cheap; not conformance)."""
    model = CoTracker3Offline(model_resolution=(64, 96))
    model.load_state_dict(synthetic_state_dict)
    return model.eval()


@pytest.fixture(scope="module")
def video(cotracker3_vector: Callable[[str], dict[str, np.ndarray]]) -> torch.Tensor:
    """``(4, 3, 48, 64)`` uint8 frames of the shared synthetic video."""
    return torch.from_numpy(cotracker3_vector("predictor_b1_grid5.npz")["video"][0, :4]).to(torch.uint8)


def test_tracks_follow_the_contract_and_equal_the_predictor(small_model, video) -> None:
    tracker: PointTracker = CoTracker3Tracker(small_model, iters=1)
    tracks = tracker.track(video, QUERIES)
    assert isinstance(tracks, Tracks)
    assert tracks.points.shape == (4, 3, 2) and tracks.points.dtype == torch.float32
    assert tracks.visible.dtype == torch.bool
    assert torch.equal(tracks.query_frames, torch.tensor([0, 2, 3]))
    expected_points, expected_visible = CoTracker3Predictor(small_model, iters=1)(
        video[None].float(), queries=QUERIES[None], backward_tracking=True
    )
    assert torch.equal(tracks.points, expected_points[0]) and torch.equal(tracks.visible, expected_visible[0])
    at_query = tracks.points[tracks.query_frames, torch.arange(3)]
    torch.testing.assert_close(at_query, QUERIES[:, 1:], rtol=0.0, atol=1e-4)


def test_uint8_and_float_videos_agree_and_no_queries_give_empty_tracks(small_model, video) -> None:
    tracker = CoTracker3Tracker(small_model, iters=1, backward=False)
    from_uint8 = tracker.track(video, QUERIES[:1])
    from_float = tracker.track(video.float(), QUERIES[:1])
    assert torch.equal(from_uint8.points, from_float.points)
    empty = tracker.track(video, torch.zeros(0, 3))
    assert empty.points.shape == (4, 0, 2) and empty.visible.shape == (4, 0) and empty.query_frames.shape == (0,)


def test_bad_shapes_raise(small_model, video) -> None:
    tracker = CoTracker3Tracker(small_model)
    with pytest.raises(CoTrackerInputError, match=r"video must be \(T, 3, H, W\)"):
        tracker.track(video[None], QUERIES)
    with pytest.raises(CoTrackerInputError, match=r"queries must be \(N, 3\)"):
        tracker.track(video, QUERIES[None])


@pytest.mark.slow
def test_b2_vector_through_the_tracker(synthetic_model, cotracker3_vector) -> None:
    vector = cotracker3_vector("predictor_b2_queries_backward.npz")
    tracks = CoTracker3Tracker(synthetic_model).track(
        torch.from_numpy(vector["video"][0]), torch.from_numpy(vector["arg_queries"][0])
    )
    torch.testing.assert_close(tracks.points, torch.from_numpy(vector["tracks"][0]), rtol=0.0, atol=2e-4)
    assert torch.equal(tracks.visible, torch.from_numpy(vector["visibility"][0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(synthetic_model, cotracker3_vector) -> None:
    vector = cotracker3_vector("predictor_b2_queries_backward.npz")
    video, queries = torch.from_numpy(vector["video"][0]), torch.from_numpy(vector["arg_queries"][0])
    matmul_tf32, cudnn_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model = CoTracker3Offline().cuda().eval()
    model.load_state_dict(synthetic_model.state_dict())
    try:
        tracks = CoTracker3Tracker(model).track(video, queries)
        half = CoTracker3Tracker(model, bf16=True).track(video, queries)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul_tf32, cudnn_tf32
    assert tracks.points.device.type == "cpu"
    torch.testing.assert_close(tracks.points, torch.from_numpy(vector["tracks"][0]), rtol=0.0, atol=1e-3)
    assert torch.equal(tracks.visible, torch.from_numpy(vector["visibility"][0]))
    assert (half.points - tracks.points).abs().max() < 2.0  # bf16: coarse agreement only
