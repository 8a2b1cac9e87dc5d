"""The synthetic weight rule and the model's state-dict layout against the shared reference listings."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from smite_ops.tracking.cotracker3 import CoTracker3Offline
from smite_ops.tracking.cotracker3.embeddings import sincos_time_table


def test_synthetic_weights_match_fingerprints(
    cotracker3_dir: Path, synthetic_state_dict: dict[str, torch.Tensor]
) -> None:
    lines = (cotracker3_dir / "weight_fingerprints.tsv").read_text(encoding="utf-8").splitlines()[1:]
    fingerprints = {key: (float(s), float(f), float(la)) for key, s, f, la in (ln.split("\t") for ln in lines)}
    assert set(fingerprints) == set(synthetic_state_dict)
    for key, (total, first, last) in fingerprints.items():
        flat = synthetic_state_dict[key].flatten()
        assert math.isclose(flat.double().sum().item(), total, rel_tol=1e-9, abs_tol=1e-8), key
        assert math.isclose(flat[0].item(), first, rel_tol=1e-8, abs_tol=1e-12), key
        assert math.isclose(flat[-1].item(), last, rel_tol=1e-8, abs_tol=1e-12), key


def test_state_dict_layout_matches_reference_listing(cotracker3_dir: Path) -> None:
    rows = (cotracker3_dir / "state_dict_keys.tsv").read_text(encoding="utf-8").splitlines()[1:]
    listing = {
        key: (tuple(int(n) for n in shape.split(",")), dtype) for key, shape, dtype in (r.split("\t") for r in rows)
    }
    model = CoTracker3Offline()
    state = model.state_dict()
    assert len(state) == 188
    assert {key: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for key, v in state.items()} == listing
    assert sum(p.numel() for p in model.parameters()) == 25_385_700
    assert "updateformer.virual_tracks" in state


def test_default_time_embedding_is_the_sincos_table() -> None:
    table = CoTracker3Offline().time_emb
    assert table.shape == (1, 60, 1110)
    assert torch.equal(table, sincos_time_table(60, 1110))
    assert table[0, 0, :555].abs().max() == 0 and torch.all(table[0, 0, 555:] == 1)
    assert math.isclose(table[0, 7, 0].item(), math.sin(7.0), rel_tol=1e-6)
    assert math.isclose(table[0, 7, 555 + 100].item(), math.cos(7 * 10000 ** (-100 / 555)), rel_tol=1e-6)
