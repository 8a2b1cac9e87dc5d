"""Reading the vectors and comparing against them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

VECTORS = Path(__file__).parent / "vectors"


def load_vector(name: str) -> dict[str, np.ndarray]:
    """All arrays of ``vectors/<name>.npz``."""
    with np.load(VECTORS / f"{name}.npz") as data:
        return {key: data[key] for key in data.files}


def assert_close_to_scale(actual: np.ndarray, expected: np.ndarray, relative: float) -> float:
    """``max |actual - expected| <= relative * max |expected|`` (the tolerance of each vector, README); returns
    the measured ``max |actual - expected| / max |expected|``."""
    scale = float(np.abs(expected).max())
    error = float(np.abs(np.asarray(actual, dtype=np.float64) - expected).max())
    assert actual.shape == expected.shape
    assert error <= relative * scale, f"max abs error {error:.3g} > {relative:g} x scale {scale:.3g}"
    return error / scale
