"""The benchmark harnesses' data folder: generated once with the asked options, refused when reused with others."""

import argparse
import importlib
from pathlib import Path

import pytest

from benchmarks.synth_bench import add_bench_arguments, dataset_names, ensure_bench
from smite_ops.errors import InputError


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    return parser.parse_args(list(argv))


def test_a_bench_is_generated_once_and_reused_only_with_the_same_options(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    small = ("--bench", str(bench), "--size", "32", "--frames", "2", "--videos", "1", "--references", "1")
    assert ensure_bench(_args(*small, "--kinds", "heldout", "car")) == bench
    written = sorted(p.name for p in bench.iterdir())
    assert written == sorted(f"{k}_{g}" for k in ("heldout-a", "heldout-b", "heldout-c", "heldout-d", "car")
                             for g in ("fine", "coarse"))
    stamp = (bench / "car_fine" / "dataset.json").stat().st_mtime_ns
    ensure_bench(_args(*small, "--kinds", "car"))
    assert (bench / "car_fine" / "dataset.json").stat().st_mtime_ns == stamp
    with pytest.raises(InputError, match=r"car_fine/dataset.json: generated with other options: size 32 \(asked 64\)"):
        ensure_bench(_args(*small, "--kinds", "car", "--size", "64"))
    with pytest.raises(InputError, match=r"references 1 \(asked 2\)"):
        ensure_bench(_args(*small, "--kinds", "car", "--references", "2"))
    with pytest.raises(InputError, match=r"no dataset face_fine"):
        ensure_bench(_args(*small, "--kinds", "face"))


@pytest.mark.parametrize("harness", ["quality", "feature_probe"])
def test_a_harness_refuses_a_mismatched_bench_in_one_line(
    harness: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main = importlib.import_module(f"benchmarks.{harness}").main
    small = ["--bench", str(tmp_path / "bench"), "--kinds", "car", "--frames", "2", "--videos", "1",
             "--references", "1"]
    ensure_bench(_args(*small, "--size", "32"))
    with pytest.raises(SystemExit) as stopped:
        main([*small, "--size", "64", "--threads", "1"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith("car_fine/dataset.json: generated with other options: size 32 (asked 64); use a new --bench")
    assert "Traceback" not in capsys.readouterr().err


def test_dataset_names_are_the_asked_ones_else_every_dataset_sorted(tmp_path: Path) -> None:
    args = _args("--bench", str(tmp_path / "bench"), "--kinds", "car", "--size", "32", "--frames", "2", "--videos", "1",
                 "--references", "1")
    ensure_bench(args)
    (tmp_path / "bench" / "notes").mkdir()
    args.datasets = None
    assert dataset_names(args) == ["car_coarse", "car_fine"]
    args.datasets = ["car_fine"]
    assert dataset_names(args) == ["car_fine"]
