"""Procedural kinds: deterministic layouts, pretraining and held-out spaces that share none, drawable instances."""

import dataclasses
import zlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.io.references import load_reference_set
from pipeline.synth import HELDOUT_KINDS, UnknownKindError, find_kind, generate_benchmark
from pipeline.synth.generate import stream
from pipeline.synth.procedural import HELDOUT_SPACE, PRETRAIN_SPACE, ProceduralKind, generic_kind
from pipeline.synth.scene import random_pose, render

SIZE = 96


def _renders(kind: ProceduralKind, count: int, phase: float | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` reference-style renders ``(rgb, fine labels)`` of new instances, on a black background."""
    drawn = []
    for index in range(count):
        rng = stream(5, kind.name, 0, index)
        instance = kind.sample_instance(rng)
        pose = random_pose(kind, rng)
        if phase is not None:
            pose = dataclasses.replace(pose, phase=phase)
        drawn.append(render(kind, instance, pose, np.zeros((SIZE, SIZE, 3), np.float32)))
    return drawn


def test_layouts_are_pure_functions_of_space_and_index() -> None:
    assert PRETRAIN_SPACE.layout(7) == PRETRAIN_SPACE.layout(7) == generic_kind(7).layout
    assert len({PRETRAIN_SPACE.layout(i).signature() for i in range(40)}) >= 30
    assert find_kind("generic-7").layout == generic_kind(7).layout
    assert find_kind("heldout-b") is HELDOUT_KINDS["heldout-b"]
    assert find_kind("car").name == "car"
    assert find_kind("generic-x") is None and find_kind("heldout-z") is None


def test_heldout_kinds_share_no_layout_with_any_pretraining_layout() -> None:
    pretrain = {PRETRAIN_SPACE.layout(i).signature() for i in range(300)}
    heldout = {kind.layout.signature() for kind in HELDOUT_KINDS.values()}
    assert len(heldout) == len(HELDOUT_KINDS) >= 4
    assert not pretrain & heldout
    # Not by luck of the draw: the spaces keep opposite halves of the signature hash, so no index ever collides.
    assert {zlib.crc32(s.encode()) % 2 for s in pretrain} == {PRETRAIN_SPACE.half} != {HELDOUT_SPACE.half}
    assert {zlib.crc32(s.encode()) % 2 for s in heldout} == {HELDOUT_SPACE.half}


@pytest.mark.parametrize("space", [PRETRAIN_SPACE, HELDOUT_SPACE], ids=lambda s: s.name)
def test_every_layout_has_a_coarse_granularity_that_merges_its_fine_parts(space) -> None:
    for index in range(60):
        layout = space.layout(index)
        fine, coarse, mapping = layout.fine_parts, layout.coarse_parts, layout.fine_to_coarse
        assert fine[0] == coarse[0] == "background" and len(set(fine)) == len(fine) and len(set(coarse)) == len(coarse)
        assert space.fine_parts[0] <= len(fine) - 1 <= space.fine_parts[1]
        assert len(mapping) == len(fine) and mapping[:2] == (0, 1)
        assert sorted(set(mapping)) == list(range(len(coarse))) and len(coarse) < len(fine)
        for chain, label in zip(layout.chains, range(2, len(coarse)), strict=True):
            assert coarse[label] == chain.names[0]


@pytest.mark.parametrize("name", sorted(HELDOUT_KINDS))
def test_heldout_kinds_show_every_part_inside_the_frame(name: str) -> None:
    kind = HELDOUT_KINDS[name]
    drawn = _renders(kind, 8)
    seen = set().union(*(np.unique(labels).tolist() for _, labels in drawn))
    assert seen == set(range(len(kind.fine_parts)))
    for _, labels in drawn:
        border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
        assert not border.any()
        assert 0.05 < (labels > 0).mean() < 0.6  # the hand-drawn car covers 11-14 %


def test_colours_do_not_identify_parts() -> None:
    kind = HELDOUT_KINDS["heldout-a"]
    instances = [kind.sample_instance(stream(0, kind.name, 0, index)) for index in range(20)]
    for label in range(1, len(kind.fine_parts)):
        assert len({instance.colours[label] for instance in instances}) >= 10
    assert all(len(set(instance.colours[1:])) <= 4 for instance in instances)
    # Some instances paint two different parts the same colour.
    assert any(len(set(instance.colours[1:])) < len(kind.fine_parts) - 1 for instance in instances)


def test_limbs_swing_with_the_phase_and_the_core_stays() -> None:
    kind = generic_kind(3)
    (_, still), (_, moved) = _renders(kind, 1, phase=0.0)[0], _renders(kind, 1, phase=1.5)[0]
    core = kind.layout.fine_to_coarse.index(1, 1)
    limbs = still >= 2
    assert (still[limbs] != moved[limbs]).mean() > 0.2
    assert np.array_equal(still == core, moved == core) or ((still == core) != (moved == core)).mean() < 0.01


def test_benchmark_of_heldout_and_generic_kinds(tmp_path: Path) -> None:
    folders = generate_benchmark(
        tmp_path, seed=1, size=64, num_references=2, videos_per_kind=1, num_frames=3, kinds=["heldout-c", "generic-2"]
    )
    assert [f.name for f in folders] == ["heldout-c_fine", "heldout-c_coarse", "generic-2_fine", "generic-2_coarse"]
    for name in ("heldout-c", "generic-2"):
        kind = find_kind(name)
        fine = load_reference_set(str(tmp_path / f"{name}_fine" / "references"))
        coarse = load_reference_set(str(tmp_path / f"{name}_coarse" / "references"))
        assert fine.part_names == list(kind.fine_parts) and coarse.part_names == list(kind.coarse_parts)
        for fine_mask, coarse_mask in zip(fine.masks, coarse.masks, strict=True):
            assert np.array_equal(np.asarray(kind.fine_to_coarse)[fine_mask], coarse_mask)
        assert (tmp_path / f"{name}_fine" / "videos" / f"{name}_00.mp4").is_file()
    with pytest.raises(UnknownKindError, match=r"unknown kind\(s\) \['generic-'\].*heldout-a.*generic-<index>"):
        generate_benchmark(tmp_path, kinds=["generic-"])
