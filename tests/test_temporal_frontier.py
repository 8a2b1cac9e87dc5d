"""The temporal frontier's verdicts: the share of today's flicker reduction and the paired comparison with today's
guided default that decides whether a cheaper mode holds issue 16's bar on a kind."""

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from benchmarks.temporal_frontier import Result, merged_rows, paired_difference, print_paired, share_of_today


def _row(candidate: str, flicker: float, per_video: list[tuple[float, float, float]] | None = None) -> Result:
    per_video = per_video or [(0.0, 0.0, flicker)]
    miou, f, _ = np.mean(per_video, axis=0)
    return Result(candidate, "car", float(miou), float(f), flicker, 1.0, 1.0, 128.0, 2048.0, 1.0, per_video)


UNGUIDED = _row("unguided", 0.10, [(40.0, 0.30, 0.1), (50.0, 0.40, 0.1), (60.0, 0.50, 0.1)])
TODAY = _row("full (today)", 0.05, [(41.0, 0.31, 0.05), (51.0, 0.41, 0.05), (61.0, 0.51, 0.05)])


def test_share_is_the_fraction_of_todays_flicker_reduction_kept() -> None:
    assert share_of_today(_row("x", 0.06), UNGUIDED, TODAY) == pytest.approx(0.8)
    assert share_of_today(_row("x", 0.03), UNGUIDED, TODAY) == pytest.approx(1.4)
    assert share_of_today(_row("x", 0.06), UNGUIDED, None) is None
    assert share_of_today(_row("x", 0.06), UNGUIDED, _row("full (today)", 0.12)) is None


def test_paired_difference_is_the_mean_with_its_student_t_interval() -> None:
    text, upper = paired_difference(np.array([1.0, 2.0, 3.0]), 2)
    half = 4.302653 / np.sqrt(3)  # t(0.975, 2 degrees of freedom) x sd 1 / sqrt(3)
    assert text == f"+2.00 [{2 - half:+.2f}, {2 + half:+.2f}]"
    assert upper == pytest.approx(2 + half, abs=1e-5)
    assert paired_difference(np.array([-0.5]), 3) == ("-0.500", -0.5)


def test_a_row_holds_the_bar_only_with_enough_flicker_reduction_and_no_significant_loss(
    capsys: pytest.CaptureFixture[str],
) -> None:
    noisy_equal = _row("noisy equal", 0.055, [(42.0, 0.30, 0.0), (50.0, 0.42, 0.0), (61.0, 0.52, 0.0)])
    worse = _row("worse", 0.04, [(40.0, 0.30, 0.0), (50.0, 0.40, 0.0), (60.1, 0.50, 0.0)])
    too_little = _row("too little", 0.065, [(42.0, 0.32, 0.0), (52.0, 0.42, 0.0), (62.0, 0.52, 0.0)])
    print_paired([UNGUIDED, noisy_equal, worse, too_little, TODAY])
    verdicts = {cells[1]: cells[-2] for line in capsys.readouterr().out.splitlines()
                if (cells := [cell.strip() for cell in line.split("|")])[1:2] and cells[2:3] == ["car"]}
    assert verdicts == {"noisy equal": "yes", "worse": "no", "too little": "no"}


def test_merge_keeps_the_first_copy_and_refuses_a_kind_without_its_baseline(tmp_path: Path) -> None:
    first, second, orphan, broken = (tmp_path / name for name in ("a.json", "b.json", "c.json", "d.json"))
    first.write_text(json.dumps([asdict(UNGUIDED), asdict(TODAY)]))
    second.write_text(json.dumps([asdict(replace(TODAY, flicker=0.5)), asdict(replace(TODAY, kind="face"))]))
    rows = merged_rows([str(first)], ["car"])
    assert [(r.kind, r.candidate, r.flicker) for r in rows] == [("car", "unguided", 0.1), ("car", "full (today)", 0.05)]
    with pytest.raises(SystemExit, match="kind 'face' has no unguided row"):
        merged_rows([str(first), str(second)], ["car", "face"])
    orphan.write_text(json.dumps([asdict(replace(UNGUIDED, kind="face"))]))
    merged = merged_rows([str(first), str(second), str(orphan)], ["face", "car"])
    assert [(r.kind, r.candidate, r.flicker) for r in merged] == [
        ("face", "full (today)", 0.05), ("face", "unguided", 0.1), ("car", "unguided", 0.1),
        ("car", "full (today)", 0.05)]
    broken.write_text("{not json")
    with pytest.raises(SystemExit, match=r"d\.json: cannot read temporal_frontier rows from it"):
        merged_rows([str(broken)], ["car"])
