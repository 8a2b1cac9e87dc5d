"""Exports to labeling tools (COCO, CVAT for video 1.1, Label Studio) from the outputs of a real run.

A real batch run on a local Ray (the weight-free nearest-colour baseline on a synthetic car dataset) writes
the committed masks; each export is loaded by its format's own reader (pycocotools' ``COCO``; Label Studio's
converter for brush RLE) or checked against the published format description (CVAT's "XML annotation
format" 1.1, Label Studio's task import format, written below as checks), then decoded back to label maps
that must equal the committed ones.
"""

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import ray
import torch
from label_studio_converter.brush import decode_rle
from PIL import Image
from pycocotools.coco import COCO
from typer.testing import CliRunner

from flows.cli import app
from pipeline.batch.driver import segment_videos
from pipeline.batch.segmenters import NearestColourFactory
from pipeline.config import load_config
from pipeline.export import ExportError, export_masks
from pipeline.export.cvat import box_runs
from pipeline.export.labelstudio import brush_rle
from pipeline.report.review import review_video
from pipeline.sinks.manifest import read_manifest
from pipeline.sinks.run_outputs import label_maps
from pipeline.synth import generate_benchmark

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

FRAMES = 8
VIDEOS = ("car_00", "car_01")


@pytest.fixture(scope="module")
def run_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output root of a real batch run: two synthetic car videos labelled by the nearest-colour baseline."""
    torch.set_num_threads(1)
    dataset = generate_benchmark(tmp_path_factory.mktemp("synth"), size=48, num_references=2, videos_per_kind=2,
                                 num_frames=FRAMES, kinds=["car"])[0]
    out = tmp_path_factory.mktemp("out")
    config = load_config("tiny", ["model.resolution=64", "runtime.windows_per_shard=1"])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = segment_videos([str(dataset / "videos")], "unused", str(out), config, progress=False,
                                segmenter_factory=NearestColourFactory(str(dataset / "references")))
    finally:
        ray.shutdown()
    assert [video.status for video in result.videos] == ["done", "done"]
    return out


def _committed(out: Path, video: str) -> np.ndarray:
    frames, labels = label_maps(str(out), video)
    assert frames.tolist() == list(range(FRAMES))
    return labels


def _part_ids(out: Path, video: str) -> dict[str, int]:
    return {name: index for index, name in enumerate(read_manifest(str(out), video)["part_names"])}


def test_coco_export_loads_in_pycocotools_and_round_trips(run_out: Path, tmp_path: Path) -> None:
    result = export_masks(str(run_out), str(tmp_path / "coco"), "coco")
    assert (result.videos, result.frames, result.images) == (2, 2 * FRAMES, 2 * FRAMES)
    coco = COCO(str(tmp_path / "coco" / "annotations.json"))
    names = {category["id"]: category["name"] for category in coco.loadCats(coco.getCatIds())}
    assert "background" not in names.values() and len(names) == len(_part_ids(run_out, "car_00")) - 1
    assert len(coco.getAnnIds()) == result.masks > 0
    for video in VIDEOS:
        committed, ids = _committed(run_out, video), _part_ids(run_out, video)
        images = sorted((image for image in coco.dataset["images"] if image["video_id"] == video),
                        key=lambda image: image["frame_index"])
        assert [image["frame_index"] for image in images] == list(range(FRAMES))
        for image in images:
            labels = np.zeros((image["height"], image["width"]), np.uint8)
            for annotation in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
                mask = coco.annToMask(annotation).astype(bool)
                assert mask.sum() == annotation["area"] and not labels[mask].any()  # parts never overlap
                labels[mask] = ids[names[annotation["category_id"]]]
            np.testing.assert_array_equal(labels, committed[image["frame_index"]])
            png = np.asarray(Image.open(tmp_path / "coco" / image["file_name"]))
            assert png.shape == (image["height"], image["width"], 3)


def _check_cvat_video_schema(root: ET.Element) -> dict[str, str]:
    """CVAT's "XML annotation format" 1.1, interpolation (video) mode, for mask tracks; returns label colours."""
    assert root.tag == "annotations" and root.findtext("version") == "1.1"
    assert [child.tag for child in root][:2] == ["version", "meta"]
    task = root.find("meta/task")
    for tag in ("id", "name", "size", "mode", "overlap", "start_frame", "stop_frame", "labels", "original_size"):
        assert task.find(tag) is not None, tag
    assert task.findtext("mode") == "interpolation" and int(task.findtext("id")) >= 0
    size = int(task.findtext("size"))
    assert int(task.findtext("start_frame")) == 0 and int(task.findtext("stop_frame")) == size - 1
    width, height = int(task.findtext("original_size/width")), int(task.findtext("original_size/height"))
    labels = {label.findtext("name"): label.findtext("color") for label in task.findall("labels/label")}
    assert all(label.findtext("type") == "mask" for label in task.findall("labels/label"))
    assert all(colour.startswith("#") and len(colour) == 7 for colour in labels.values())
    track_ids = set()
    for track in root.findall("track"):
        assert set(track.attrib) == {"id", "label", "source"} and track.get("source") in {"manual", "auto", "semi-auto"}
        assert track.get("label") in labels and track.get("id") not in track_ids
        track_ids.add(track.get("id"))
        frames = [int(shape.get("frame")) for shape in track]
        assert frames == sorted(set(frames)) and all(0 <= frame < size for frame in frames)
        for shape in track:
            assert shape.tag == "mask"
            assert {shape.get(key) for key in ("outside", "occluded", "keyframe")} <= {"0", "1"}
            left, top, w, h = (int(shape.get(key)) for key in ("left", "top", "width", "height"))
            assert left >= 0 and top >= 0 and left + w <= width and top + h <= height and w > 0 and h > 0
            runs = [int(value) for value in shape.get("rle").split(",")]
            assert sum(runs) == w * h and min(runs) >= 0 and int(shape.get("z_order")) == 0
        assert track[-1].get("outside") == "1" or frames[-1] == size - 1  # a shape ends where the track goes outside
    return labels


def _cvat_labels(root: ET.Element, ids: dict[str, int]) -> np.ndarray:
    """Label maps from CVAT masks: each non-outside mask's runs filled into its box."""
    size = int(root.findtext("meta/task/size"))
    labels = np.zeros((size, int(root.findtext("meta/task/original_size/height")),
                       int(root.findtext("meta/task/original_size/width"))), np.uint8)
    for track in root.findall("track"):
        for shape in track:
            if shape.get("outside") == "1":
                continue
            left, top, w, h = (int(shape.get(key)) for key in ("left", "top", "width", "height"))
            runs = [int(value) for value in shape.get("rle").split(",")]
            flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs).reshape(h, w)
            labels[int(shape.get("frame")), top : top + h, left : left + w][flat] = ids[track.get("label")]
    return labels


def test_cvat_runs_start_with_background_and_cover_the_box() -> None:
    mask = np.zeros((4, 5), bool)
    mask[1, 1:4] = mask[2, 1] = True
    assert box_runs(mask) == ((1, 1, 3, 2), [0, 4, 2])
    assert box_runs(~np.eye(3, dtype=bool)) == ((0, 0, 3, 3), [1, 3, 1, 3, 1])


def test_cvat_export_matches_the_video_format_and_round_trips(run_out: Path, tmp_path: Path) -> None:
    result = export_masks(str(run_out), str(tmp_path / "cvat"), "cvat", video_ids=["car_01"])
    assert result.annotation_files == ("car_01/annotations.xml",) and result.images == FRAMES
    root = ET.parse(tmp_path / "cvat" / "car_01" / "annotations.xml").getroot()
    labels = _check_cvat_video_schema(root)
    ids = _part_ids(run_out, "car_01")
    assert set(labels) == set(ids) - {"background"}
    np.testing.assert_array_equal(_cvat_labels(root, ids), _committed(run_out, "car_01"))
    assert (tmp_path / "cvat" / "car_01" / "images" / f"frame_{FRAMES - 1:06d}.png").is_file()


# Label Studio's task import format (labelstud.io "Import pre-annotated data", brush labels) as a JSON schema.
LABEL_STUDIO_TASKS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {"type": "object", "required": ["image"], "properties": {"image": {"type": "string"}}},
            "predictions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["result"],
                    "properties": {
                        "model_version": {"type": "string"},
                        "score": {"type": "number"},
                        "result": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["from_name", "to_name", "type", "value", "original_width",
                                             "original_height"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "type": {"const": "brushlabels"},
                                    "from_name": {"type": "string"},
                                    "to_name": {"type": "string"},
                                    "original_width": {"type": "integer", "minimum": 1},
                                    "original_height": {"type": "integer", "minimum": 1},
                                    "image_rotation": {"type": "number"},
                                    "value": {
                                        "type": "object",
                                        "required": ["format", "rle", "brushlabels"],
                                        "properties": {
                                            "format": {"const": "rle"},
                                            "rle": {"type": "array", "items": {"type": "integer", "minimum": 0,
                                                                               "maximum": 255}},
                                            "brushlabels": {"type": "array", "items": {"type": "string"},
                                                            "minItems": 1},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_label_studio_export_matches_the_import_format_and_round_trips(run_out: Path, tmp_path: Path) -> None:
    result = export_masks(str(run_out), str(tmp_path / "ls"), "labelstudio", images=False,
                          image_url_prefix="/data/local-files/?d=")
    assert result.images == 0 and not (tmp_path / "ls" / "images").exists()
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    jsonschema.validate(tasks, LABEL_STUDIO_TASKS)
    config = ET.fromstring((tmp_path / "ls" / "labeling_config.xml").read_text())
    image, brush = config.find("Image"), config.find("BrushLabels")
    assert image.get("value") == "$image" and brush.get("toName") == image.get("name")
    names = {label.get("value") for label in brush.findall("Label")}
    assert len(tasks) == 2 * FRAMES
    for video in VIDEOS:
        committed, ids = _committed(run_out, video), _part_ids(run_out, video)
        assert names == set(ids) - {"background"}
        for task in (task for task in tasks if task["data"]["video_id"] == video):
            index = task["data"]["frame_index"]
            assert task["data"]["image"] == f"/data/local-files/?d=images/{video}/{index:06d}.png"
            labels = np.zeros(committed.shape[1:], np.uint8)
            for item in task["predictions"][0]["result"]:
                assert (item["from_name"], item["to_name"]) == (brush.get("name"), image.get("name"))
                rgba = decode_rle(bytes(item["value"]["rle"])).reshape(item["original_height"],
                                                                       item["original_width"], 4)
                labels[rgba[..., 3] > 0] = ids[item["value"]["brushlabels"][0]]
            np.testing.assert_array_equal(labels, committed[index])


def test_brush_rle_splits_runs_longer_than_the_widest_length_field() -> None:
    mask = np.zeros((300, 300), bool)
    mask[:, :200] = True  # 4 * 300 * 300 values, runs far beyond 2**16
    decoded = decode_rle(bytes(brush_rle(mask))).reshape(300, 300, 4)
    np.testing.assert_array_equal(decoded[..., 3] > 0, mask)


def test_flagged_frames_export_only_the_review_queue(run_out: Path, tmp_path: Path) -> None:
    queue = {video: review_video(str(run_out), video).review_frames.tolist() for video in VIDEOS}
    result = export_masks(str(run_out), str(tmp_path / "flagged"), "coco", frames="flagged", images=False)
    coco = json.loads((tmp_path / "flagged" / "annotations.json").read_text())
    exported = {video: [image["frame_index"] for image in coco["images"] if image["video_id"] == video]
                for video in VIDEOS}
    assert exported == queue and result.frames == sum(map(len, queue.values()))


def test_export_command_writes_under_out_and_reports_bad_input_in_one_line(run_out: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["export", str(run_out), "--format", "cvat", "--videos", "car_00", "--no-images"])
    assert ok.exit_code == 0, ok.output
    assert "cvat: 1 video(s), 8 frame(s)" in ok.stdout and (run_out / "exports/cvat/car_00/annotations.xml").is_file()
    for args, message in (
        (["--format", "yolo"], "--format yolo: unknown export format; choose one of coco, cvat, labelstudio"),
        (["--videos", "car_09"], "video(s) car_09 not committed there"),
        (["--frames", "some"], "--frames some: unknown frame selection"),
    ):
        bad = runner.invoke(app, ["export", str(run_out), *args])
        assert bad.exit_code == 2 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    with pytest.raises(ExportError, match="no committed video"):
        export_masks(str(run_out / "nothing"), str(run_out / "x"), "coco")
