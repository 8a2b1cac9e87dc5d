"""Run state and checkpoint writing of backbone pretraining (:mod:`pipeline.training.pretrain_tiny`).

A run saves its state (weights, optimiser, schedule, random stream, step) to ``<out>/pretrain-state.pt`` as it
goes (:class:`ResumableRun`); the finished checkpoint replaces ``<out>`` whole (:func:`write_checkpoint`). A kill
at any point leaves either the run state or the finished checkpoint, and :func:`prepare_out` tidies up after it.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from smite_ops.errors import InputError
from smite_ops.tiny_model import TinyComponents, save_tiny_sd

if TYPE_CHECKING:
    from pipeline.training.pretrain_tiny import PretrainSettings

STATE_FILE = "pretrain-state.pt"
STATE_PARTIAL = "pretrain-state.partial"
"""The state being written, renamed to :data:`STATE_FILE` once whole (a kill mid-write leaves it behind)."""
STAGES = ("vae", "unet")
CHECKPOINT_ENTRIES = frozenset(
    {"model_index.json", "unet", "vae", "scheduler", "text_encoder", "tokenizer", "pretrain.json", STATE_FILE,
     STATE_PARTIAL}
)
"""What a pretraining ``--out`` may hold: a finished checkpoint and the run state."""
RUN_ONLY = ("out", "log_every", "threads", "checkpoint_every", "budget_minutes")
"""Settings that do not change the weights: a run may resume another's state with other values of these."""


class PretrainPaused(Exception):
    """The run's time budget ran out; its state is saved and the same command continues it."""


class ResumableRun:
    """The saved state of one pretraining run in ``<out>/pretrain-state.pt``.

    Construction restores a saved state into ``parts`` and ``generator`` (refusing one saved with other
    settings); :meth:`resume` then restores a stage's optimiser and schedule and :meth:`save` checkpoints it.
    """

    def __init__(self, settings: PretrainSettings, parts: TinyComponents, generator: torch.Generator) -> None:
        self.settings, self.parts, self.generator = settings, parts, generator
        self.path = settings.out / STATE_FILE
        self.began = time.perf_counter()
        self.saved: dict | None = None
        if self.path.is_file():
            try:
                self.saved = torch.load(self.path, weights_only=True)
            except (OSError, RuntimeError, pickle.UnpicklingError) as err:
                raise InputError(f"{self.path}: unreadable run state ({type(err).__name__}); delete it") from None
            if differ := [f"{key} {value} (asked {getattr(settings, key)})"
                          for key, value in self.saved["settings"].items() if getattr(settings, key) != value]:
                raise InputError(f"{self.path}: saved by a run with other settings: {', '.join(differ)}; "
                                 "use another --out or delete it")
            parts.vae.load_state_dict(self.saved["vae"])
            parts.unet.load_state_dict(self.saved["unet"])
            generator.set_state(self.saved["generator"])
            print(f"resuming {self.saved['stage']} step {self.saved['step']} from {self.path}", flush=True)

    @property
    def seconds(self) -> float:
        """Wall time of this run and the runs it continues (s, at ``settings.threads`` threads)."""
        return (self.saved["seconds"] if self.saved else 0.0) + time.perf_counter() - self.began

    @property
    def runs(self) -> int:
        """How many runs this one is, counting the runs it continues."""
        return (self.saved["runs"] if self.saved else 0) + 1

    def resume(self, stage: str, steps: int, optimizer: torch.optim.Optimizer, schedule: Any) -> int:
        """The last step of ``stage`` already done (0 for a fresh stage), with its optimiser and schedule restored."""
        if self.saved is None or STAGES.index(self.saved["stage"]) < STAGES.index(stage):
            return 0
        if self.saved["stage"] != stage:
            return steps
        optimizer.load_state_dict(self.saved["optimizer"])
        schedule.load_state_dict(self.saved["schedule"])
        return self.saved["step"]

    def save(self, stage: str, step: int, optimizer: torch.optim.Optimizer, schedule: Any) -> None:
        """Write the state after ``step`` of ``stage`` (atomically).

        Raises:
            PretrainPaused: the budget (``--budget-minutes``) ran out and this was not the run's last step.
        """
        state = {
            "settings": {key: value for key, value in vars(self.settings).items() if key not in RUN_ONLY},
            "stage": stage, "step": step, "vae": self.parts.vae.state_dict(), "unet": self.parts.unet.state_dict(),
            "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "generator": self.generator.get_state(), "seconds": self.seconds, "runs": self.runs,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(STATE_PARTIAL)
        torch.save(state, partial)
        os.replace(partial, self.path)
        budget = self.settings.budget_minutes * 60.0 or math.inf
        last = stage == STAGES[-1] and step == self.settings.unet_steps
        if time.perf_counter() - self.began >= budget and not last:
            raise PretrainPaused(f"paused at {stage} step {step} after {self.seconds:.0f} s over {self.runs} run(s)")


def _aside(out: Path) -> Path:
    return out.with_name(out.name + ".old")


def _finish_swap(out: Path) -> None:
    """Complete or undo a checkpoint swap a kill interrupted (see :func:`write_checkpoint`)."""
    aside = _aside(out)
    if not aside.is_dir():
        return
    if out.exists():  # the new checkpoint is in place; only deleting the old folder was missed
        shutil.rmtree(aside)
    else:  # killed between the two moves: put the old folder, and the run state in it, back
        os.replace(aside, out)


def prepare_out(out: Path) -> None:
    """Check that ``out`` is new or holds only a checkpoint and run state, and finish a swap a kill interrupted.

    Raises:
        InputError: ``out`` holds other files.
    """
    if out.is_dir() and (foreign := sorted(p.name for p in out.iterdir() if p.name not in CHECKPOINT_ENTRIES)):
        raise InputError(f"{out}: holds {foreign[:3]}, not a pretraining checkpoint; use a new --out")
    _finish_swap(out)


def write_checkpoint(parts: TinyComponents, settings: PretrainSettings, run: ResumableRun) -> dict[str, Any]:
    """Save the finished backbone into ``settings.out`` whole, with ``pretrain.json`` (settings, compute time,
    runs), and return that record.

    The checkpoint is written to ``<out>.partial``; then ``out`` (with the run state) moves to ``<out>.old``, the
    new folder moves in, and the old one is deleted. A kill at any point leaves either the run state or the
    finished checkpoint, never neither (:func:`prepare_out` tidies up on the next run).
    """
    out = settings.out
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    save_tiny_sd(parts, partial)
    record = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(settings).items()},
              "wall_seconds": round(run.seconds, 1), "runs": run.runs}
    (partial / "pretrain.json").write_text(json.dumps(record, indent=2) + "\n")
    if out.exists():
        os.replace(out, _aside(out))  # only checkpoint entries (checked first); the run state goes with them
    os.replace(partial, out)
    _finish_swap(out)
    return record
