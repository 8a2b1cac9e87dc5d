"""The feature probe reads the captured cross-attention queries of all capture layers, or of chosen map sides."""

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from benchmarks.feature_probe import QueryFeatures, probe_runner
from smite_ops.conditioning import encode_part_prompt
from smite_ops.errors import InputError
from smite_ops.unet_maps import MapRunner


@pytest.fixture(scope="module")
def runner() -> Iterator[MapRunner]:
    runner = probe_runner("tiny")
    yield runner
    runner.close()


def _features(runner: MapRunner, layer_sizes: frozenset[int] | None) -> torch.Tensor:
    """Features of a black 64 px image at 256 px working resolution (32-cell maps), timestep 100."""
    conditioning, _ = encode_part_prompt(runner.backbone.text_encoder, runner.backbone.tokenizer, ["background", "a"])
    return QueryFeatures(runner, conditioning, 256, 100, layer_sizes)(np.zeros((64, 64, 3), np.uint8))


@pytest.mark.parametrize(("sides", "channels"), [(None, 5 * 48), ({8}, 3 * 48), ({16}, 2 * 48), ({8, 16}, 5 * 48)])
def test_features_concatenate_the_queries_of_the_chosen_layers(
    runner: MapRunner, sides: set[int] | None, channels: int
) -> None:
    features = _features(runner, None if sides is None else frozenset(sides))
    assert features.shape == (channels, 32, 32) and torch.isfinite(features).all()


def test_a_map_side_no_layer_has_is_refused_with_the_sides_there_are(runner: MapRunner) -> None:
    message = r"--layer-sizes \[32\]: the capture layers at 256 px have map sides \[8, 16\]"
    with pytest.raises(InputError, match=message):
        _features(runner, frozenset({32}))
