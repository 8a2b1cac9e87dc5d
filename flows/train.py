"""The ``train`` flow: a reference set -> a learned part model (pipeline.training.train does the work)."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.retry import retry_unless_bad_input
from pipeline.config import JobConfig, resolve_config
from pipeline.training.train import TrainResult, train_part_model


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=retry_unless_bad_input)
def learn_parts(references: str, out: str, job: JobConfig, validation: str | None, progress: bool) -> TrainResult:
    """Train, resuming from ``out``'s last finished epoch (so a retry after a crash loses at most one epoch)."""
    return train_part_model(references, out, job, validation_dir=validation, progress=progress)


@flow(name="train")
def train_flow(
    references: str,
    out: str,
    config: str | JobConfig | None = None,
    overrides: list[str] | None = None,
    validation: str | None = None,
    progress: bool = False,
) -> TrainResult:
    """Learn a part model from a reference set (``images/``, ``masks/``, ``parts.txt``) into ``out``.

    Args:
        references: reference set folder (local path or fsspec URL).
        out: folder for the part model and the resumable training state.
        config: YAML file or preset name (``tiny``, ``car``, ...; None: production defaults), or a
            :class:`JobConfig` already resolved by the caller (then without ``overrides``).
        overrides: ``section.key=value`` strings applied on top of ``config``.
        validation: optional separate reference set for model selection.
        progress: show a progress bar (epochs) on the console.
    """
    result = learn_parts(references, out, resolve_config(config, list(overrides or [])), validation, progress)
    get_run_logger().info(
        "part model %s: best validation mIoU %.1f at epoch %d (%.0f s)",
        result.model_dir, result.best_miou, result.best_epoch, result.seconds,
    )
    create_markdown_artifact(
        f"Part model `{result.model_dir}`: best validation mIoU **{result.best_miou:.1f}** at epoch "
        f"{result.best_epoch} ({result.epochs_run} epochs run, {result.seconds:.0f} s).",
        key="train-result",
        description="training summary",
    )
    return result
