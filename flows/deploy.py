"""Scheduled labelling: a deployment of the ``segment`` flow on a cron over a bucket prefix.

Every scheduled run expands the prefix and segments only the videos without a committed output (see
:mod:`flows.segment`), so new arrivals get labelled and nothing is redone. ``smite deploy`` registers the
deployment with the Prefect server named by ``PREFECT_API_URL`` and serves it from this process (no work pool
needed); ``prefect.yaml`` at the repository root describes the same deployment for ``prefect deploy`` with a
process work pool. At most one run of a deployment is active at a time, so a slow run is never overlapped by
the next tick working on the same new videos.
"""

from __future__ import annotations

from prefect import serve
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron
from prefect.settings import get_current_settings

from flows.segment import segment_flow
from smite_ops.errors import InputError


class DeploymentError(InputError):
    """A deployment cannot be created or served; the message names the option and the problem."""


def check_cron(cron: str) -> str:
    """Return ``cron`` when Prefect accepts it as a cron schedule.

    Raises:
        DeploymentError: ``--cron <expr>: not a valid cron expression ...``.
    """
    try:
        CronSchedule(cron=cron)
    except ValueError:
        raise DeploymentError(
            f"--cron {cron!r}: not a valid cron expression (5 fields: minute hour day-of-month month day-of-week)"
        ) from None
    return cron


def segment_deployment(
    name: str,
    inputs: list[str],
    out: str,
    cron: str,
    *,
    model: str | None = None,
    config: str | None = None,
    overrides: list[str] | None = None,
    baseline: str | None = None,
    timezone: str = "UTC",
) -> RunnerDeployment:
    """A deployment of the ``segment`` flow that runs on ``cron`` with these parameters (nothing is sent yet)."""
    parameters = {
        "inputs": list(inputs), "out": out, "model": model, "config": config,
        "overrides": list(overrides or []), "baseline": baseline,
    }
    return segment_flow.to_deployment(
        name=name,
        schedules=[Cron(check_cron(cron), timezone=timezone)],
        parameters=parameters,
        concurrency_limit=1,
        description=f"label new videos of {' '.join(inputs)} into {out}",
        tags=["smite", "segment"],
    )


def serve_deployment(deployment: RunnerDeployment) -> None:
    """Register ``deployment`` with the Prefect server and run its scheduled runs here until interrupted.

    Raises:
        DeploymentError: no Prefect API URL is set (``PREFECT_API_URL`` or the active profile): schedules need a
            long-running server, not the ephemeral one.
    """
    if not get_current_settings().api.url:
        raise DeploymentError(
            "PREFECT_API_URL is not set: schedules need a Prefect server (start one with `prefect server start` "
            "and export PREFECT_API_URL=http://127.0.0.1:4200/api)"
        )
    serve(deployment)
