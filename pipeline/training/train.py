"""`smite train`: learn a part model from a reference set, resumable after every epoch.

The output folder receives the part model (the best validation mIoU so far, see
:mod:`smite_ops.part_model`) and ``training_state.pt``, the state of the last finished epoch; running the
same command again continues from there, with the same result as an uninterrupted run (every epoch draws its
augmentation and noise from its own seed, :func:`epoch_seed`). The state records the job it belongs to (parts,
resolution, backbone, what is trained, seed); a state of another job is refused in one line, never resumed.
Validation uses a separate reference set when one is given, else the training references without augmentation
(a reference set has only a handful of images).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pipeline.config import ConfigError, JobConfig
from pipeline.io.references import ReferenceSet, load_reference_set
from pipeline.method.backbone_source import load_job_backbone
from pipeline.method.settings import learn_settings, map_options
from pipeline.training.augment import ReferenceAugmenter
from smite_ops.conditioning import encode_part_prompt, encode_prompt
from smite_ops.errors import InputError
from smite_ops.learning import PartLearner
from smite_ops.part_model import save_part_model

STATE_FILE = "training_state.pt"


class TrainingStateError(InputError):
    """The output folder holds training state that cannot be resumed by this job."""


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    model_dir: Path
    epochs_run: int
    best_epoch: int
    best_miou: float
    seconds: float


def _check_parts(config: JobConfig, references: ReferenceSet) -> None:
    default_parts = JobConfig().parts
    if config.parts != default_parts and config.parts != references.part_names:
        raise ConfigError(
            f"{references.root}/parts.txt: parts {references.part_names} differ from the config's parts {config.parts}"
        )


def job_identity(config: JobConfig, part_names: list[str]) -> dict[str, object]:
    """What a resumed run must share with the run that wrote the state (the backbone hash is added once loaded)."""
    train = config.train
    return {"parts": list(part_names), "resolution": config.model.resolution, "base_model": config.model.base,
            "readout": config.model.readout, "trainable": train.trainable, "stage2": train.stage2, "seed": train.seed}


def read_training_state(path: Path, identity: dict[str, object]) -> dict[str, Any] | None:
    """The training state at ``path`` (None when there is none), refused unless it belongs to ``identity``.

    Raises:
        TrainingStateError: unreadable, written without a job record, or by a job that differs in a key of
            ``identity`` (the message names the first such key with both values).
    """
    if not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=True)
    except Exception as err:  # torch raises pickle, zip and runtime errors for damaged files
        raise TrainingStateError(f"{path}: unreadable training state ({err.__class__.__name__})") from None
    recorded = state.get("job") if isinstance(state, dict) else None
    if not isinstance(recorded, dict):
        raise TrainingStateError(f"{path}: training state without a job record; train into an empty folder")
    recorded.setdefault("readout", "was")  # states written before the readout option all selected by WAS maps
    check_same_job(path, recorded, identity)
    return state


def check_same_job(path: Path, recorded: dict[str, object], identity: dict[str, object]) -> None:
    """Refuse a state whose job record ``recorded`` differs from ``identity`` (see :func:`read_training_state`)."""
    for key, value in identity.items():
        if key in recorded and recorded[key] != value:
            raise TrainingStateError(
                f"{path}: belongs to another training job ({key} {recorded[key]!r}, this job {value!r}); "
                "train into another folder or delete it to start over"
            )
    if missing := sorted(identity.keys() - recorded.keys()):
        raise TrainingStateError(f"{path}: training state does not record {', '.join(missing)}; cannot resume it")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's augmentation and noise: a resumed run repeats an uninterrupted one exactly."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _as_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``(H, W, 3)`` image and ``(H, W)`` mask -> ``(3, H, W)`` float in [-1, 1] and int64 labels."""
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1.0
    return tensor, torch.from_numpy(np.array(mask)).long()


def train_part_model(
    references_dir: str, out_dir: str | Path, config: JobConfig, *, validation_dir: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or resume training) a part model.

    Args:
        references_dir: reference set folder (see :mod:`pipeline.io.references`).
        out_dir: where the part model and the training state go.
        config: job configuration (``model``, ``train`` and ``runtime`` sections are used).
        validation_dir: optional separate reference set for model selection.
        progress: show a progress bar.
    """
    started = time.perf_counter()
    references = load_reference_set(references_dir)
    _check_parts(config, references)
    validation = load_reference_set(validation_dir) if validation_dir else references
    if validation.part_names != references.part_names:
        raise ConfigError(f"{validation.root}/parts.txt: parts differ from {references.root}/parts.txt")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    identity = job_identity(config, references.part_names)
    state = read_training_state(state_path, identity)  # refuse foreign state before the backbone loads

    torch.manual_seed(config.train.seed)
    backbone = load_job_backbone(config.model, config.runtime, with_text_encoder=True, for_training=True)
    identity["base_hash"] = backbone.content_hash
    base, init = encode_part_prompt(backbone.text_encoder, backbone.tokenizer, references.part_names)
    uncond = encode_prompt(backbone.text_encoder, backbone.tokenizer, "")
    learner = PartLearner(
        backbone, references.part_names, base, init, uncond, learn_settings(config), options=map_options(config)
    )

    start_epoch, best_epoch, best_miou = 0, -1, -1.0
    if state is not None:
        check_same_job(state_path, state["job"], identity)  # now with the backbone's content hash
        learner.load_state_dict(state["learner"])
        start_epoch, best_epoch, best_miou = state["next_epoch"], state["best_epoch"], state["best_miou"]

    val_samples = [_as_tensors(image, mask) for image, mask in zip(validation.images, validation.masks, strict=True)]
    bar = tqdm(range(start_epoch, config.train.epochs), desc="train", unit="epoch", disable=not progress)
    for epoch in bar:
        augment = ReferenceAugmenter(
            config.model.resolution, config.train.min_crop_ratio, config.train.flip,
            face=config.segment.multi_crop, seed=epoch_seed(config.train.seed, epoch),
        )
        generator = torch.Generator().manual_seed(epoch_seed(config.train.seed, epoch))
        order = torch.randperm(len(references), generator=generator).tolist()
        losses = []
        for step, index in enumerate(order):
            focus = (epoch * len(references) + step) % references.num_parts
            image, mask = _as_tensors(*augment(references.images[index], references.masks[index], focus))
            losses.append(float(learner.step(image, mask, epoch, generator).total))
        score = learner.validate([s[0] for s in val_samples], [s[1] for s in val_samples], generator)
        if score > best_miou:
            best_epoch, best_miou = epoch, score
            info = {"epoch": epoch, "validation_miou": score, "config_digest": config.digest(),
                    "train": config.model_dump(mode="json")["train"]}
            save_part_model(learner.part_model(info), str(out))
        pending = state_path.with_suffix(".pending")
        torch.save(
            {"learner": learner.state_dict(), "next_epoch": epoch + 1, "best_epoch": best_epoch,
             "best_miou": best_miou, "job": identity},
            pending,
        )
        pending.replace(state_path)
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", val_miou=f"{score:.1f}", best=f"{best_miou:.1f}")
    learner.runner.close()
    return TrainResult(
        model_dir=out, epochs_run=config.train.epochs - start_epoch, best_epoch=best_epoch, best_miou=best_miou,
        seconds=time.perf_counter() - started,
    )
