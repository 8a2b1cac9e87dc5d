"""The quality harness's tables: rows per dataset, means per kind over its datasets, and the overall mean."""

from benchmarks.quality import METHODS, kind_table, markdown_table
from pipeline.evaluation.evaluate import GroupScores


def _scores(miou: float) -> dict[str, GroupScores]:
    return {method: GroupScores(videos=1, frames=4, miou_ref=miou + shift, miou_present=None, j=None, f=None,
                                flicker=0.01)
            for method, shift in zip(METHODS, (0.0, -10.0, -20.0), strict=True)}


RESULTS = {"car_fine": _scores(40.0), "face_fine": _scores(70.0), "car_coarse": _scores(60.0)}


def test_kind_table_averages_each_kind_over_its_datasets() -> None:
    rows = kind_table(RESULTS, {"car_fine": 80.0, "car_coarse": 90.0, "face_fine": 75.0}).splitlines()[2:]
    assert rows == [
        "| car | 50.0 | 40.0 | 30.0 | 85.0 | 0.0100 |",
        "| face | 70.0 | 60.0 | 50.0 | 75.0 | 0.0100 |",
    ]


def test_markdown_table_lists_datasets_then_kind_means_then_the_overall_mean() -> None:
    smite_rows = [row.split(" | ")[:4] for row in markdown_table(RESULTS).splitlines()[2:] if "| smite |" in row]
    assert smite_rows == [
        ["| car_fine", "smite", "1", "40.0"], ["| face_fine", "smite", "1", "70.0"],
        ["| car_coarse", "smite", "1", "60.0"], ["| **car**", "smite", "2", "50.0"],
        ["| **face**", "smite", "1", "70.0"], ["| **all**", "smite", "3", "56.7"],
    ]
