"""Synthetic benchmark: determinism, kinds and granularities, visibility, occlusion, layout, video/GT agreement."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.evaluation.smite50 import read_ground_truth
from pipeline.io.references import load_reference_set
from pipeline.io.video import probe_video, read_frames
from pipeline.synth import KINDS, UnknownKindError, generate_benchmark
from pipeline.synth.generate import SynthError, stream
from pipeline.synth.scene import random_scene, render_video

SMALL = {"size": 64, "num_references": 3, "videos_per_kind": 2, "num_frames": 8}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_benchmark(out, seed=3, **SMALL)
    return out


def _non_video_files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix != ".mp4"
    }


def _mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_same_seed_same_bytes_other_seed_other_bytes(small: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    folders = generate_benchmark(again, seed=3, **SMALL)
    assert [folder.name for folder in folders] == [
        f"{kind}_{granularity}" for kind in ("car", "face", "horse") for granularity in ("fine", "coarse")
    ]
    first, second = _non_video_files(small), _non_video_files(again)
    assert first.keys() == second.keys() and len(first) > 100
    assert all(first[name] == second[name] for name in first)
    other = generate_benchmark(tmp_path / "other", seed=4, kinds=["car"], **{**SMALL, "num_frames": 12})[0]
    other = generate_benchmark(tmp_path / "other", seed=4, kinds=["car"], **SMALL)[0]  # rewrites, no stale frames
    assert len(read_ground_truth(other / "gt" / "car_00").frame_indices) == SMALL["num_frames"]
    for name in ("references/images/000.png", "references/masks/000.png", "gt/car_00/00000/01.png"):
        assert (other / name).read_bytes() != (small / "car_fine" / name).read_bytes(), name


def test_kinds_have_at_least_four_fine_parts_and_coarse_merges_them() -> None:
    assert len(KINDS) >= 3
    for kind in KINDS.values():
        assert kind.fine_parts[0] == kind.coarse_parts[0] == "background"
        assert len(kind.fine_parts) - 1 >= 4
        assert len(kind.fine_to_coarse) == len(kind.fine_parts) and kind.fine_to_coarse[0] == 0
        assert set(kind.fine_to_coarse) == set(range(len(kind.coarse_parts)))  # every coarse part is a merge
        assert len(kind.coarse_parts) < len(kind.fine_parts)


def test_coarse_ground_truth_is_the_fine_one_merged(small: Path) -> None:
    for name, kind in KINDS.items():
        mapping = np.asarray(kind.fine_to_coarse, dtype=np.uint8)
        fine, coarse = small / f"{name}_fine", small / f"{name}_coarse"
        for stem in ("000", "001", "002"):
            fine_mask = _mask(fine / "references" / "masks" / f"{stem}.png")
            np.testing.assert_array_equal(mapping[fine_mask], _mask(coarse / "references" / "masks" / f"{stem}.png"))
            assert (fine / "references/images" / f"{stem}.png").read_bytes() == (
                coarse / "references/images" / f"{stem}.png"
            ).read_bytes()
        for video in (f"{name}_00", f"{name}_01"):
            fine_gt = read_ground_truth(fine / "gt" / video, num_parts=len(kind.fine_parts))
            coarse_gt = read_ground_truth(coarse / "gt" / video, num_parts=len(kind.coarse_parts))
            np.testing.assert_array_equal(mapping[fine_gt.labels], coarse_gt.labels)
            assert (fine / "videos" / f"{video}.mp4").read_bytes() == (coarse / "videos" / f"{video}.mp4").read_bytes()


def test_every_part_is_visible_in_every_reference_and_every_video(small: Path) -> None:
    for name, kind in KINDS.items():
        parts = set(range(len(kind.fine_parts)))
        references = load_reference_set(str(small / f"{name}_fine" / "references"))
        assert references.part_names == list(kind.fine_parts) and len(references) == SMALL["num_references"]
        for stem, mask in zip(references.stems, references.masks, strict=True):
            assert set(np.unique(mask).tolist()) == parts, (name, stem)
        for video in (f"{name}_00", f"{name}_01"):
            labels = read_ground_truth(small / f"{name}_fine" / "gt" / video).labels
            assert set(np.unique(labels).tolist()) == parts, (name, video)


def test_occluder_hides_parts_and_is_background_in_the_ground_truth() -> None:
    kind = KINDS["face"]
    rng = stream(0, "face", 1, 0)
    instance, scene = kind.sample_instance(rng), random_scene(kind, rng, 96)
    frames, occluded = render_video(kind, instance, scene, 16)
    clear_frames, clear = render_video(kind, instance, scene, 16, occluded=False)
    changed = np.any(frames != clear_frames, axis=-1)  # the occluder's pixels
    assert changed.any(axis=(1, 2)).sum() >= 3  # it is in view for several frames
    assert np.all(occluded[changed] == 0)  # occluder pixels are background
    np.testing.assert_array_equal(occluded[~changed], clear[~changed])  # nothing else changes
    areas = np.stack([(occluded == part).sum(axis=(1, 2)) for part in range(1, len(kind.fine_parts))])
    clear_areas = np.stack([(clear == part).sum(axis=(1, 2)) for part in range(1, len(kind.fine_parts))])
    assert np.any(areas < 0.7 * clear_areas)  # some part loses more than 30 % of its area in some frame


def test_layout_dataset_json_and_disjoint_instances(small: Path) -> None:
    for name, kind in KINDS.items():
        for granularity, parts in (("fine", kind.fine_parts), ("coarse", kind.coarse_parts)):
            folder = small / f"{name}_{granularity}"
            meta = json.loads((folder / "dataset.json").read_text())
            assert meta["kind"] == name and meta["granularity"] == granularity
            assert meta["parts"] == list(parts) == (folder / "references/parts.txt").read_text().split()
            assert meta["videos"] == [f"{name}_00", f"{name}_01"]
            assert (meta["seed"], meta["size"]) == (3, SMALL["size"])
            assert sorted(p.stem for p in (folder / "videos").glob("*.mp4")) == meta["videos"]
            assert sorted(p.name for p in (folder / "gt").iterdir()) == meta["videos"]
            references = meta["instances"]["references"]
            videos = list(meta["instances"]["videos"].values())
            assert len(references) == SMALL["num_references"] and len(videos) == 2
            assert not any(reference == video for reference in references for video in videos)
            colours = {tuple(instance[next(iter(instance))]) for instance in references}
            assert colours.isdisjoint(tuple(instance[next(iter(instance))]) for instance in videos)


def test_video_frames_match_dense_ground_truth_and_the_rendered_scene(small: Path) -> None:
    kind = KINDS["horse"]
    mp4 = small / "horse_fine" / "videos" / "horse_01.mp4"
    info = probe_video(str(mp4))
    gt = read_ground_truth(small / "horse_fine" / "gt" / "horse_01")
    assert info.num_frames == SMALL["num_frames"] == len(gt.frame_indices) and gt.frame_indices == list(range(8))
    assert (info.height, info.width) == gt.labels.shape[1:] == (64, 64)
    rng = stream(3, "horse", 1, 1)
    instance = kind.sample_instance(rng)
    rendered, labels = render_video(kind, instance, random_scene(kind, rng, 64), SMALL["num_frames"])
    np.testing.assert_array_equal(labels, gt.labels)
    decoded = read_frames(str(mp4), 0, info.num_frames).astype(np.float32)
    aligned = np.abs(decoded - rendered).mean()
    shifted = np.abs(decoded[1:] - rendered[:-1]).mean()
    assert aligned < 6.0 and shifted > aligned  # the encoded frame t is the rendered frame t


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"kinds": ["car", "boat"]}, UnknownKindError, r"unknown kind\(s\) \['boat'\]"),
        ({"num_frames": 1}, SynthError, "num_frames=1"),
        ({"size": 16}, SynthError, "size=16"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        generate_benchmark(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


def test_default_set(tmp_path: Path) -> None:
    start = time.perf_counter()
    folders = generate_benchmark(tmp_path)
    elapsed = time.perf_counter() - start
    print(f"\ndefault synthetic benchmark (3 kinds x 2 granularities, 256 px, 3 x 48 frames): {elapsed:.1f} s")
    assert len(folders) == 6
    for folder in folders:
        meta = json.loads((folder / "dataset.json").read_text())
        assert len(list((folder / "references" / "images").glob("*.png"))) == 10
        for video in meta["videos"]:
            info = probe_video(str(folder / "videos" / f"{video}.mp4"))
            frames = (folder / "gt" / video / "frames_numbers.txt").read_text()
            assert info.num_frames >= 48 and (info.height, info.width) == (256, 256)
            assert frames.startswith(f"[{', '.join(str(i) for i in range(info.num_frames))}]")
            assert len([p for p in (folder / "gt" / video).iterdir() if p.is_dir()]) == info.num_frames
