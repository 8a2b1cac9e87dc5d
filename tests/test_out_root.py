"""Output roots that would lose or cannot take the outputs are refused before anything starts (issue 11,
items 5 and 7), leftovers of dead runs are removed (item 11), and run reports never share a name (item 6).
The CLI runs in-process; the read-only root is a real read-only tmpfs mount (root only)."""

import subprocess
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.segment import report_uri
from pipeline.sinks.out_root import OutputError, check_output, remove_leftovers
from pipeline.synth import generate_benchmark


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    return generate_benchmark(root, size=32, num_references=1, videos_per_kind=1, num_frames=3, kinds=["car"])[0]


@pytest.mark.parametrize("command", ["segment", "evaluate", "train"])
def test_memory_outputs_are_refused_in_one_line(dataset: Path, tmp_path: Path, command: str, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    refs, video = str(dataset / "references"), str(dataset / "videos")
    out = "memory://m"
    args = {
        "segment": ["segment", video, "--baseline", refs, "-c", "tiny", "--out", out],
        "evaluate": ["evaluate", str(dataset), "--baseline", refs, "-c", "tiny", "--out", out],
        "train": ["train", refs, "-c", "tiny", "--out", out],
    }[command]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: --out memory://m:") and result.output.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # no local folder named `memory:`


def test_a_read_only_output_root_is_refused_before_any_work(dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "ro"
    root.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(root)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    try:
        with pytest.raises(OutputError, match=r"^--out .*/ro: not writable \(Read-only file system\)$"):
            check_output(str(root))
        refs, video = str(dataset / "references"), str(dataset / "videos")
        result = CliRunner().invoke(app, ["segment", video, "--baseline", refs, "-c", "tiny", "--out", str(root)])
        assert result.exit_code == 2 and "not writable" in result.output
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_leftovers_of_dead_runs_are_removed_and_committed_files_kept(tmp_path: Path) -> None:
    kept = ["masks/video_id=a/part-00000.parquet", "overlays/a.mp4", "_manifest/a.json", "failures.parquet"]
    left = [f"_staging/{uuid.uuid4().hex}/masks/video_id=b/part-00000.parquet", "overlays/.b.mp4.0123.partial",
            "_manifest/.b.json.0123abcd.pending", ".failures.parquet.0123abcd.pending",
            "masks/.pending-b-0123abcd/part-00000.parquet"]
    for name in kept + left:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    removed = remove_leftovers(str(tmp_path))
    assert len(removed) == len(left)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == sorted(kept)


def test_two_reports_started_in_the_same_second_get_different_names() -> None:
    assert len({report_uri("out", "segment") for _ in range(20)}) == 20
