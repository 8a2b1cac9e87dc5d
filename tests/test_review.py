"""Review signals: known answers on hand-made part areas, and read back from a real masks dataset."""

from pathlib import Path

import numpy as np

from pipeline.report.review import ReviewSettings, review_signals, review_video
from pipeline.sinks.masks import VideoMaskWriter

PARTS = ["background", "body", "wheel"]


def _steady(frames: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Areas (fractions) of background, body and wheel, constant over time; scores 0.9 everywhere."""
    area = np.tile([0.6, 0.3, 0.1], (frames, 1))
    return area, np.full(area.shape, 0.9)


def test_a_vanishing_part_is_flagged_and_its_neighbours_are_not() -> None:
    area, score = _steady()
    area[5] = [0.7, 0.3, 0.0]
    review = review_signals(np.arange(10), area, score)
    assert review.presence_change[5].tolist() == [0.0, 0.0, 1.0]
    np.testing.assert_allclose(review.shrink[5], [0.0, 0.0, 0.1 / 0.105])
    np.testing.assert_allclose(review.area_change[5, 2], 0.1 / 0.105)
    assert review.reason(5, PARTS) == "wheel missing; part confidence 0.90"
    assert review.review_frames.tolist() == [5] and review.worst_part[5] == 2
    np.testing.assert_allclose(review.presence_change[[3, 4, 6, 7], 2], 0.25)  # one neighbour in four lacks it


def test_shrink_scores_a_part_below_its_usual_size_even_for_many_frames() -> None:
    area, score = _steady(14)
    area[2:7, 2] = 0.0  # the wheel is missing for five frames: the neighbours alone would miss the middle ones
    area[9, 2] = 0.04  # then at 40 % of its size
    area[10, 0] = 0.2  # only the background changes
    review = review_signals(np.arange(14), area, score)
    assert review.review_frames.tolist() == [2, 3, 4, 5, 6, 9]
    assert review.presence_change[4, 2] == 0.0  # in the middle of the gap every neighbour lacks it too
    np.testing.assert_allclose(review.score[9], 0.06 / 0.105)
    assert review.reason(9, PARTS) == "wheel area -60 % of its usual; part confidence 0.90"
    assert review.score[10] == 0.0 and review.area_change[10].max() == 0.0


def test_part_confidence_leaves_out_the_background_and_is_scored_only_when_asked() -> None:
    area, score = _steady()
    score[:, 0] = 0.2  # unsure background everywhere does not matter
    score[4, 1:] = 0.3  # unsure parts in frame 4 do
    review = review_signals(np.arange(10), area, score)
    np.testing.assert_allclose(review.part_confidence[[0, 4]], [0.9, 0.3])
    assert not review.flagged.any()  # by default the score is the shrink alone
    weighted = review_signals(np.arange(10), area, score, ReviewSettings(confidence_weight=1.0))
    np.testing.assert_allclose(weighted.score[4], 0.6)
    assert weighted.review_frames.tolist() == [4]


def test_short_and_empty_videos() -> None:
    area, score = _steady(1)
    assert not review_signals(np.arange(1), area, score).flagged.any()
    assert review_signals(np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 3))).flagged.shape == (0,)


def test_review_video_reads_the_committed_masks(tmp_path: Path) -> None:
    labels = np.zeros((8, 16, 16), np.uint8)
    labels[:, 2:10, 2:14] = 1
    labels[:, 10:14, 4:8] = 2
    labels[6, 10:14, 4:8] = 1  # the wheel disappears in frame 6
    probabilities = np.full((3, 16, 16), 0.1, np.float32)
    with VideoMaskWriter(str(tmp_path), "clip", PARTS, "model-x") as writer:
        for index, frame in enumerate(labels):
            np.put_along_axis(probabilities, frame[None].astype(np.int64), 0.8, axis=0)
            writer.write_frame(index, index / 8, frame, probabilities)
        writer.commit()
    review = review_video(str(tmp_path), "clip", num_parts=3)
    assert review.frame_indices.tolist() == list(range(8)) and review.area.shape == (8, 3)
    np.testing.assert_allclose(review.area[0], [144 / 256, 96 / 256, 16 / 256])
    assert review.review_frames.tolist() == [6] and review.present[6].tolist() == [True, True, False]
