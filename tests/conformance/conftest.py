"""The tiny SD-2.1-shaped checkpoint the conformance vectors were made with, rebuilt from its seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.sd21_tiny import write_sd21_tiny


@pytest.fixture(scope="session")
def sd21_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The tiny checkpoint folder (rebuilt from its seed) and its weight digests."""
    root = tmp_path_factory.mktemp("sd21") / "sd21-tiny"
    return root, write_sd21_tiny(root)
