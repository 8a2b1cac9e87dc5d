"""Benchmark baselines: known answers on hand-made colour images."""

import numpy as np
import torch

from smite_ops.baselines import AllBackgroundSegmenter, NearestColourSegmenter


def test_all_background() -> None:
    scores = AllBackgroundSegmenter(3)(torch.zeros(2, 3, 4, 5, dtype=torch.uint8))
    assert scores.shape == (2, 3, 4, 5) and bool((scores.argmax(1) == 0).all())


def test_nearest_colour_recovers_colour_coded_parts_and_generalises_to_unseen_shades() -> None:
    image = np.zeros((4, 6, 3), np.uint8)
    mask = np.zeros((4, 6), np.int64)
    image[:, 2:4] = (200, 30, 30)
    mask[:, 2:4] = 1
    image[:, 4:] = (30, 30, 200)
    mask[:, 4:] = 2
    segmenter = NearestColourSegmenter([image], [mask], num_parts=3)
    frames = torch.from_numpy(image).permute(2, 0, 1)[None]
    assert torch.equal(segmenter(frames).argmax(1)[0], torch.from_numpy(mask))
    # a shade never seen in the references goes to the nearest seen colour
    shade = torch.tensor([180, 50, 40], dtype=torch.uint8).view(1, 3, 1, 1)
    scores = segmenter(shade)
    assert scores.shape == (1, 3, 1, 1) and int(scores.argmax(1)) == 1
    torch.testing.assert_close(scores.sum(1), torch.ones(1, 1, 1))


def test_nearest_colour_scores_are_class_frequencies() -> None:
    image = np.full((2, 2, 3), 90, np.uint8)
    mask = np.array([[0, 1], [1, 1]])
    scores = NearestColourSegmenter([image], [mask], num_parts=2)(torch.from_numpy(image).permute(2, 0, 1)[None])
    torch.testing.assert_close(scores[0, :, 0, 0], torch.tensor([0.25, 0.75]))
