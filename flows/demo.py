"""The ``demo`` flow: the whole product path on a laptop, with no server, GPU, network or downloaded weights.

1. Generate the synthetic part benchmark (:mod:`pipeline.synth`) under ``<out>/data``.
2. Per object kind: train the tiny model from the dataset's reference images (``train`` subflow), then segment
   its test videos on Ray and score them (``evaluate`` subflow, which runs ``segment``).
3. Write one HTML report for the whole demo, ``<out>/report.html``: metrics of every kind, every video's
   overlays and confidence plot, and the training and run facts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.evaluate import EvaluationRun, evaluate_flow
from flows.train import train_flow
from pipeline.config import load_config
from pipeline.evaluation.evaluate import EvaluationReport
from pipeline.report.html import RunReport, write_report
from pipeline.synth import generate_benchmark
from pipeline.training.train import TrainResult


@dataclass(frozen=True)
class DemoRun:
    """Where the demo put everything, and its scores.

    Attributes:
        out: the demo's root folder.
        datasets: the synthetic dataset folders evaluated.
        trained: per dataset name, the training result.
        evaluations: per dataset name, the evaluation run (its ``segment.out`` holds the Parquet masks
            under ``masks/`` and the overlays under ``overlays/``).
        evaluation: every video's scores together (kinds are the dataset names).
        report: path of the demo's HTML report.
        seconds: wall time, s.
    """

    out: str
    datasets: tuple[str, ...]
    trained: dict[str, TrainResult]
    evaluations: dict[str, EvaluationRun]
    evaluation: EvaluationReport
    report: str
    seconds: float

    def summary(self) -> str:
        """What to print at the end: where the outputs are, and the metrics table."""
        lines = [f"demo finished in {self.seconds:.0f} s under {self.out}"]
        for name, run in self.evaluations.items():
            lines += [
                f"  {name}: part model {self.trained[name].model_dir}",
                f"  {name}: Parquet masks {run.segment.out.rstrip('/')}/masks/  overlays "
                f"{run.segment.out.rstrip('/')}/overlays/  metrics {run.metrics_json}",
            ]
        lines += [f"report: {self.report}", "", self.evaluation.to_markdown()]
        return "\n".join(lines)


@task(name="generate-benchmark", cache_policy=NO_CACHE)
def generate(
    out: str, kinds: list[str], granularity: str, seed: int, size: int, frames: int, videos: int, references: int
) -> list[str]:
    """Write the synthetic datasets of ``kinds``; returns the ``<kind>_<granularity>`` folders."""
    folders = generate_benchmark(
        out, seed=seed, size=size, num_references=references, num_frames=frames, videos_per_kind=videos, kinds=kinds
    )
    return [str(folder) for folder in folders if folder.name.endswith(f"_{granularity}")]


@flow(name="demo")
def demo_flow(
    out: str = "demo_out",
    kinds: list[str] | None = None,
    granularity: str = "coarse",
    config: str = "tiny",
    overrides: list[str] | None = None,
    seed: int = 0,
    size: int = 128,
    frames: int = 24,
    videos: int = 2,
    references: int = 4,
    progress: bool = False,
) -> DemoRun:
    """Run the embedded default end to end (see the module docstring).

    Args:
        out: root folder; ``data/``, ``models/<dataset>/``, ``runs/<dataset>/`` and ``report.html`` go here.
        kinds: object kinds (``car``, ``face``, ``horse``); default ``car`` (one tiny model to train keeps the
            demo within minutes on two CPU cores).
        granularity: ``coarse`` or ``fine`` part lists.
        config, overrides: job configuration (default the ``tiny`` preset: CPU, tiny backbone, LK tracker).
        seed, size, frames, videos, references: synthetic data: seed, frame side (pixels), frames per video,
            test videos and reference images per kind.
        progress: show progress bars on the console.
    """
    started = time.perf_counter()
    job = load_config(config, list(overrides or []))
    root = Path(out)
    datasets = generate(
        str(root / "data"), list(kinds or ["car"]), granularity, seed, size, frames, videos, references
    )
    trained: dict[str, TrainResult] = {}
    evaluations: dict[str, EvaluationRun] = {}
    for dataset in datasets:
        name = Path(dataset).name
        trained[name] = train_flow(f"{dataset}/references", str(root / "models" / name), job, progress=progress)
        evaluations[name] = evaluate_flow(
            dataset, str(root / "runs" / name), model=str(trained[name].model_dir), config=job, size=size,
            progress=progress,
        )
    evaluation = EvaluationReport(
        videos=[row for run in evaluations.values() for row in run.evaluation.videos], size=size,
        warnings=[line for run in evaluations.values() for line in run.evaluation.warnings],
    )
    facts = {
        "Prefect flow run": str(flow_run.get_name() or "none"),
        "config": f"{config} {' '.join(overrides or [])}".strip(),
        "config digest": job.digest(),
        "backbone": job.model.base,
        **{f"{name}: model id": run.segment.model_id or "n/a" for name, run in evaluations.items()},
        **{f"{name}: training": f"{result.epochs_run} epochs, {result.seconds:.1f} s, best validation mIoU "
           f"{result.best_miou:.1f}" for name, result in trained.items()},
        **{f"{name}: segmentation": f"{run.segment.batch.seconds:.1f} s" if run.segment.batch else "skipped"
           for name, run in evaluations.items()},
        "demo time": f"{time.perf_counter() - started:.1f} s",
    }
    sections = tuple(section for run in evaluations.values() for section in run.sections)
    report = write_report(RunReport("SMITE demo", facts, sections, evaluation), str(root / "report.html"))
    result = DemoRun(str(root), tuple(datasets), trained, evaluations, evaluation, report,
                     time.perf_counter() - started)
    get_run_logger().info("demo finished: report %s", report)
    return result
