"""Evaluation of a predictions folder against SMITE-50-layout ground truth, with hand-computed scores."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.evaluation.evaluate import (
    EvaluationError,
    EvaluationReport,
    evaluate_predictions,
    find_videos,
    kind_of,
    save_label_maps,
)
from pipeline.evaluation.smite50 import GroundTruthError, write_ground_truth

PARTS = "background\nbody\nwheel\n"


def frame() -> np.ndarray:
    """8x8 labels: body (1) on rows 0-3 (32 px), wheel (2) on rows 4-5 x cols 0-3 (8 px), background 24 px."""
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[:4] = 1
    labels[4:6, :4] = 2
    return labels


GT = np.stack([frame(), frame()])  # annotated frames 0 and 1 (consecutive)


def make_dataset(root: Path, name: str, video_ids: list[str]) -> Path:
    dataset = root / name
    (dataset / "references").mkdir(parents=True)
    (dataset / "references" / "parts.txt").write_text(PARTS)
    for video_id in video_ids:
        write_ground_truth(dataset / "gt" / video_id, [0, 1], GT, num_parts=3)
    return dataset


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    """Two datasets: car_coarse (car_00, car_01) and face_fine (face_00)."""
    make_dataset(tmp_path / "bench", "car_coarse", ["car_00", "car_01"])
    make_dataset(tmp_path / "bench", "face_fine", ["face_00"])
    return tmp_path / "bench"


def perfect_predictions(pred: Path | str, video_ids: list[str]) -> None:
    for video_id in video_ids:
        save_label_maps(pred, video_id, [0, 1], GT)


def test_predictions_equal_to_gt_score_perfectly(bench: Path, tmp_path: Path) -> None:
    perfect_predictions(tmp_path / "pred", ["car_00", "car_01", "face_00"])
    report = evaluate_predictions(tmp_path / "pred", bench, size=32)
    assert [(r.kind, r.video_id, r.frames) for r in report.videos] == [
        ("car_coarse", "car_00", 2),
        ("car_coarse", "car_01", 2),
        ("face_fine", "face_00", 2),
    ]
    for row in [*report.videos, *report.per_kind.values(), report.overall]:
        assert row.miou_ref == pytest.approx(100.0) and row.miou_present == pytest.approx(100.0)
        assert (row.j, row.f, row.flicker) == (1.0, 1.0, 0.0)
    assert report.warnings == []
    assert (report.overall.videos, report.overall.frames) == (3, 6)


def test_evaluates_at_512_by_default(bench: Path, tmp_path: Path) -> None:
    perfect_predictions(tmp_path / "pred", ["car_00", "car_01", "face_00"])
    report = evaluate_predictions(tmp_path / "pred", bench / "face_fine")
    assert report.size == 512 and [r.video_id for r in report.videos] == ["face_00"]
    assert report.videos[0].f == 1.0


def test_missing_frame_counts_as_background_with_a_warning(bench: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    perfect_predictions(pred, ["car_00", "car_01", "face_00"])
    (pred / "car_00" / "00001.png").unlink()
    report = evaluate_predictions(pred, bench, size=8)
    car_00 = report.videos[0]
    # frame 1 all background: class 0 IoU 24/64 = 37.5 %, classes 1 and 2 -> 0; frame 0 perfect (100 up to the
    # reference's 1e-7): per class (100 + 37.5) / 2, 50, 50 -> mean 56.25
    assert car_00.miou_ref == pytest.approx(56.25)
    assert car_00.miou_present == pytest.approx(56.25)
    assert (car_00.j, car_00.f) == (0.5, 0.5)
    assert car_00.flicker == pytest.approx(40 / 64)  # the 40 foreground pixels change between frames 0 and 1
    assert report.per_kind["car_coarse"].miou_ref == pytest.approx((56.25 + 100) / 2)
    assert report.overall.j == pytest.approx((0.5 + 1 + 1) / 3)
    assert len(report.warnings) == 1
    assert "car_coarse/car_00: 1 of 2 annotated frames" in report.warnings[0] and report.warnings[0].endswith(": 1")


def test_swapped_part_gives_known_miou(bench: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    perfect_predictions(pred, ["car_00", "car_01", "face_00"])
    wrong = GT.copy()
    wrong[1][wrong[1] == 2] = 1  # frame 1: the wheel predicted as body
    save_label_maps(pred, "car_01", [0, 1], wrong)
    row = evaluate_predictions(pred, bench / "car_coarse", size=8).videos[1]
    # body: frame 1 IoU 32/40; wheel: frame 1 IoU 0; background perfect
    assert row.video_id == "car_01"
    assert row.miou_ref == pytest.approx((100 + (100 + 80) / 2 + 100 / 2) / 3, rel=1e-6)
    assert row.j == pytest.approx((1 + (0.8 + 0) / 2) / 2)


def test_dataset_subfolder_of_predictions_wins(bench: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    perfect_predictions(pred, ["car_00", "car_01", "face_00"])
    save_label_maps(pred / "car_coarse", "car_00", [0, 1], np.zeros_like(GT))  # PRED/<dataset>/<video_id>
    report = evaluate_predictions(pred, bench, size=8)
    assert report.videos[0].j == 0.0 and report.videos[1].j == 1.0


def test_dataset_kind_is_the_folder_name_even_for_dot(bench: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(bench / "car_coarse")
    assert [(v.video_id, v.kind) for v in find_videos(".")] == [("car_00", "car_coarse"), ("car_01", "car_coarse")]


def test_bare_video_folders_kind_from_id_and_inferred_classes(tmp_path: Path) -> None:
    for video_id in ("car_07", "face3", "car_10"):
        write_ground_truth(tmp_path / "gt" / video_id, [0, 1], GT, num_parts=3)
        save_label_maps(tmp_path / "pred", video_id, [0, 1], GT)
    videos = find_videos(tmp_path / "gt")
    assert [(v.video_id, v.kind, v.dataset) for v in videos] == [
        ("car_07", "car", None),
        ("car_10", "car", None),
        ("face3", "face", None),
    ]
    assert [v.video_id for v in find_videos(tmp_path / "gt" / "face3")] == ["face3"]
    report = evaluate_predictions(tmp_path / "pred", tmp_path / "gt", size=8)
    assert list(report.per_kind) == ["car", "face"]
    assert report.per_kind["car"].videos == 2
    assert report.overall.miou_ref == pytest.approx(100.0)  # P inferred as max label + 1 = 3
    with pytest.raises(GroundTruthError, match="car_07/00000: 2 part PNGs, but num_parts=4 needs 3"):
        evaluate_predictions(tmp_path / "pred", tmp_path / "gt", num_parts=4, size=8)


def test_class_never_in_gt_counts_zero_only_in_reference_convention(tmp_path: Path) -> None:
    no_wheel = np.where(GT == 2, 0, GT).astype(np.uint8)
    write_ground_truth(tmp_path / "gt" / "car_1", [0, 1], no_wheel, num_parts=3)  # 02.png is empty everywhere
    save_label_maps(tmp_path / "pred", "car_1", [0, 1], no_wheel)
    given = evaluate_predictions(tmp_path / "pred", tmp_path / "gt", num_parts=3, size=8).overall
    assert given.miou_ref == pytest.approx(200 / 3) and given.miou_present == pytest.approx(100.0)
    inferred = evaluate_predictions(tmp_path / "pred", tmp_path / "gt", size=8).overall  # P = max label + 1 = 2
    assert inferred.miou_ref == pytest.approx(100.0)


def test_kind_of() -> None:
    assert (kind_of("car_07"), kind_of("horse45"), kind_of("Horse_3_front_view"), kind_of("42")) == (
        "car",
        "horse",
        "Horse_3_front_view",
        "42",
    )


def test_report_json_round_trip_and_markdown(bench: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    perfect_predictions(pred, ["car_00", "face_00"])  # car_01 has no predictions at all
    flat = tmp_path / "flat"
    write_ground_truth(flat / "blank_1", [0, 3], np.zeros((2, 8, 8), np.uint8), num_parts=2)
    save_label_maps(pred, "blank_1", [0, 3], np.zeros((2, 8, 8), np.uint8))
    report = evaluate_predictions(pred, bench, size=8)
    text = report.to_json()
    assert EvaluationReport.from_json(text) == report
    data = json.loads(text)
    assert set(data) == {"size", "videos", "per_kind", "overall", "warnings"}
    assert data["overall"]["videos"] == 3 and "all" in data["warnings"][0]
    lines = report.to_markdown().splitlines()
    for name in ("car_00", "car_01", "face_00", "car_coarse", "face_fine", "**all**"):
        assert sum(line.startswith(f"| {name} |") for line in lines) == 1
    rows = [line for line in lines if line.startswith("| ") and "---" not in line]
    assert len(rows) == 2 + 3 + 2 + 1  # two headers, three videos, two kinds, the overall row
    # a video without objects and without consecutive frames: J, F, flicker undefined -> null / n/a
    blank = evaluate_predictions(pred, flat, size=8)
    assert (blank.videos[0].j, blank.videos[0].f, blank.videos[0].flicker) == (None, None, None)
    assert json.loads(blank.to_json())["videos"][0]["j"] is None
    assert "| blank_1 | blank | 2 | 100.00 | 100.00 | n/a | n/a | n/a |" in blank.to_markdown()


def test_save_label_maps_writes_the_layout(tmp_path: Path) -> None:
    labels = np.arange(2 * 4 * 5, dtype=np.int64).reshape(2, 4, 5)
    save_label_maps(tmp_path, "vid", [7, 12], labels)
    assert sorted(p.name for p in (tmp_path / "vid").iterdir()) == ["00007.png", "00012.png"]
    with Image.open(tmp_path / "vid" / "00012.png") as image:
        assert image.mode == "L"
        np.testing.assert_array_equal(np.asarray(image), labels[1])


@pytest.mark.parametrize(
    ("indices", "labels", "message"),
    [
        ([0], np.zeros((2, 4, 4), np.uint8), "K=1"),
        ([0, 1], np.full((2, 4, 4), 256), "0..255"),
        ([0, 0], np.zeros((2, 4, 4), np.uint8), "distinct"),
        ([0, 1], np.zeros((2, 4, 4), np.float32), "integers"),
    ],
)
def test_save_label_maps_rejects_bad_input(
    tmp_path: Path, indices: list[int], labels: np.ndarray, message: str
) -> None:
    with pytest.raises(EvaluationError, match=message) as info:
        save_label_maps(tmp_path, "vid", indices, labels)
    assert "vid" in str(info.value)


def test_bad_predictions_and_folders_name_the_file(bench: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    perfect_predictions(pred, ["car_00", "car_01", "face_00"])
    rgb = pred / "car_00" / "00001.png"
    Image.new("RGB", (8, 8)).save(rgb)
    with pytest.raises(EvaluationError, match=f"{rgb}: expected a single-channel 8-bit label map"):
        evaluate_predictions(pred, bench, size=8)
    rgb.write_bytes(b"not a png")
    with pytest.raises(EvaluationError, match=f"{rgb}: unreadable image"):
        evaluate_predictions(pred, bench, size=8)
    save_label_maps(pred, "car_00", [0, 1], GT + 1)  # label 3 with P=3 from parts.txt
    with pytest.raises(EvaluationError, match=f"{pred / 'car_00' / '00000.png'}: label 3 >= number of classes 3"):
        evaluate_predictions(pred, bench, size=8)
    with pytest.raises(EvaluationError, match="predictions folder not found"):
        evaluate_predictions(tmp_path / "nope", bench)
    with pytest.raises(EvaluationError, match="no ground truth found"):
        evaluate_predictions(pred, tmp_path / "pred")
    with pytest.raises(EvaluationError, match="size"):
        evaluate_predictions(pred, bench, size=0)


def test_works_on_fsspec_memory_urls(bench: Path) -> None:
    url = "memory://evaluate-test/pred"
    perfect_predictions(url, ["car_00", "car_01", "face_00"])
    report = evaluate_predictions(url, bench, size=8)
    assert report.overall.j == 1.0 and report.warnings == []
