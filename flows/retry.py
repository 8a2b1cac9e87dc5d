"""Retry policy of the flows' tasks: transient failures (I/O, a lost Ray node) retry, bad input never does."""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import TaskRun
from prefect.states import State


def retry_unless_bad_input(task: Any, task_run: TaskRun, state: State) -> bool:
    """Prefect ``retry_condition_fn``: False when the task failed on a :class:`ValueError` (every input error of
    this project is one: a bad file, folder or configuration value, which a retry cannot fix), else True."""
    try:
        state.result(raise_on_failure=True)
    except ValueError:
        return False
    except Exception:  # anything else may be transient
        return True
    return True
