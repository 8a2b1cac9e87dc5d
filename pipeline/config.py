"""Job configuration: pydantic models loaded from YAML, with `--set a.b=value` overrides.

The method's settings are declared once, in ``smite_ops`` (:mod:`smite_ops.settings`): the ``train``, ``segment``
and ``guidance`` sections are pydantic dataclasses that inherit them and add only what the job needs (epochs,
windows, seeds, the guidance mode); the other sections are the job's own. The defaults are the production defaults
of METHOD.md (SD 2.1-base, the reference's windows, learning and guidance knobs); `configs/smite.yaml` spells them
out and a test keeps the two equal. Presets (`car.yaml`,
`horse.yaml`, `face.yaml`, `tiny.yaml`) hold only what differs. Every error names the file and the key.

Values from YAML are checked strictly: no coercion between types (``true`` is not an integer, ``1`` is not a
boolean, ``2.0`` is not an integer), and every float must be finite. Exponent floats read as numbers the way
users write them (``1e-3``, which YAML 1.1 would leave a string; see :class:`ConfigLoader`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import ArgsKwargs

from smite_ops.errors import InputError
from smite_ops.guidance import GuidanceSettings
from smite_ops.learning import LearnOptions
from smite_ops.losses import LossOptions
from smite_ops.segmentation import SegmentOptions
from smite_ops.settings import (
    SETTINGS_CONFIG,
    Epochs,
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(InputError):
    """A configuration file or override is invalid; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelConfig(_Section):
    """Which diffusion backbone to use and how to run it."""

    base: str = Field("stabilityai/stable-diffusion-2-1-base", description="hub id, local folder or fsspec URL")
    resolution: PositiveInt = Field(512, description="working resolution in pixels (square)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 (or float16) on CUDA, float32 on CPU"
    )
    allow_download: bool = Field(False, description="fetch the backbone from the hub when it is not cached")
    readout: Literal["was", "cross_attention"] = Field(
        "was", description="class maps read for validation, segmentation and guidance (smite_ops MapOptions.readout)"
    )

    @field_validator("resolution")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"must be a multiple of 32, got {value}")
        return value


@dataclass(frozen=True, config=SETTINGS_CONFIG)
class TrainConfig(LossOptions, LearnOptions):
    """Learning from reference images (METHOD.md §3): the method's :class:`LearnOptions` and :class:`LossOptions`,
    and how the job feeds them."""

    epochs: Epochs = 300
    min_crop_ratio: Fraction = Field(0.8, description="augmentation: smallest random crop, fraction of the side")
    flip: bool = Field(True, description="augmentation: random horizontal flips")
    seed: int = 777


@dataclass(frozen=True, config=SETTINGS_CONFIG)
class _Windowed:
    """A section that splits videos into windows of ``window`` frames overlapping by ``overlap``."""

    window: PositiveInt
    overlap: NonNegativeInt

    @model_validator(mode="after")
    def _overlap_below_window(self) -> _Windowed:
        if self.overlap >= self.window:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than window ({self.window})")
        return self


@dataclass(frozen=True, config=SETTINGS_CONFIG)
class SegmentConfig(SegmentOptions, _Windowed):
    """Unguided window segmentation (METHOD.md §4.1-4.3, 4.6, 4.7): the method's :class:`SegmentOptions`, the
    windows, and the job's frame sizes and seed."""

    window: PositiveInt = 18
    overlap: NonNegativeInt = 0
    max_side: PositiveInt = Field(812, description="hierarchical mode: longest side of native frames, in pixels")
    seed: int = 777


GUIDANCE_MODE_PRESETS: dict[str, dict[str, Any]] = {
    "filter": {"overlap": 0, "timesteps": (104, 103, 102, 101), "iterations": 15},
    "fast": {"overlap": 0, "timesteps": (104, 103), "iterations": 3},
    "full": {"overlap": 8, "timesteps": (104, 103, 102, 101), "iterations": 15},
}
"""Values of ``overlap``, ``timesteps`` and ``iterations`` that each ``guidance.mode`` takes when they are unset or
null (``full``: the guidance shipped before issue 16; ``filter`` runs no latent update, so only its overlap matters)."""


@dataclass(frozen=True, config=SETTINGS_CONFIG)
class GuidanceConfig(GuidanceSettings, _Windowed):
    """Spatio-temporal latent guidance (METHOD.md §4.4, §5-7): the method's :class:`GuidanceSettings`, the windows
    and the phase-B mode; off when both weights are 0 (the reference's default).

    ``mode`` picks the phase-B refinement (``smite_ops.temporal``): ``full`` (default) = the reference's guided loop
    (tracking term only, soft KL loss: the best row of ``benchmarks/ablation.py``); ``fast`` = the zero-UNet
    track-vote filter, then a few latent updates toward the filtered scores, windows without overlap (1/23 of the
    cost); ``filter`` = the filter alone. ``overlap``, ``timesteps`` and ``iterations`` left null take the mode's preset
    (:data:`GUIDANCE_MODE_PRESETS`); ``benchmarks/temporal_frontier.py`` measures the modes (README).
    """

    window: PositiveInt = 16
    overlap: NonNegativeInt = 8
    mode: Literal["filter", "fast", "full"] = Field("full", description="phase-B refinement (smite_ops.temporal)")
    filter_radius: NonNegativeInt = Field(0, description="track-vote filter: spread of each correction, in map cells")

    @model_validator(mode="before")
    @classmethod
    def _mode_presets(cls, data: Any) -> Any:
        """Fill the unset values of the mode's preset. Lists become tuples: after a before-validator strict
        validation runs on Python data, where only a tuple fills a tuple field."""
        if isinstance(data, ArgsKwargs) and not data.args:
            return ArgsKwargs((), cls._mode_presets(data.kwargs or {}))
        if not isinstance(data, dict):
            return data
        preset = GUIDANCE_MODE_PRESETS.get(data.get("mode") or "full", {})
        filled = {**data, **{key: value for key, value in preset.items() if data.get(key) is None}}
        return {key: tuple(value) if isinstance(value, list) else value for key, value in filled.items()}


class TrackerConfig(_Section):
    """Point tracking shared by all windows of a video (METHOD.md §5)."""

    kind: Literal["cotracker3", "lucas_kanade"] = "cotracker3"
    checkpoint: str | None = Field(None, description="CoTracker3 offline checkpoint (.pth or .safetensors)")
    model_resolution: tuple[PositiveInt, PositiveInt] = (384, 512)
    iterations: PositiveInt = 6
    grid_spacing: PositiveInt = Field(8, description="query grid cell size in working-resolution pixels")
    query_every: PositiveInt = Field(8, description="a new query grid every this many frames")
    chunk_frames: PositiveInt = Field(60, description="frames per tracker call on long videos")
    chunk_overlap: NonNegativeInt = 8

    @model_validator(mode="after")
    def _overlap_below_chunk(self) -> TrackerConfig:
        if self.chunk_overlap >= self.chunk_frames:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_frames ({self.chunk_frames})"
            )
        return self


class RuntimeConfig(_Section):
    """Where and how wide the job runs."""

    ray_address: str | None = Field(None, description="None: RAY_ADDRESS or a local ray.init(); or 'auto', 'ray://…'")
    num_actors: PositiveInt = 1
    gpus_per_actor: NonNegativeFloat = 1.0
    cpus_per_actor: NonNegativeFloat = 1.0
    cpus_per_writer: NonNegativeFloat = Field(
        1.0, description="CPUs of each task that blends, labels and writes a segment of frames (0: share others')"
    )
    windows_per_shard: PositiveInt = 4
    max_shards_in_flight: PositiveInt = Field(
        4, description="shards running or with results still to be read; a guided video may need a few more"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    placement_timeout_s: PositiveFloat = Field(
        60.0, description="how long to wait for Ray to place the shard actors (e.g. GPU nodes scaling up), s"
    )
    runtime_env: dict[str, Any] | None = Field(
        None, description="Ray runtime_env of a job that starts or joins Ray (e.g. py_modules, pip, env_vars)"
    )


class OutputConfig(_Section):
    """Which outputs a segmentation job writes besides the Parquet masks."""

    overlays: bool = True
    tracks: bool = False
    overlay_fps: PositiveFloat | None = Field(None, description="None: the source video's fps")


class JobConfig(_Section):
    """A complete job configuration; see configs/smite.yaml for every key with its default."""

    parts: list[str] = Field(default_factory=lambda: ["background", "object"], min_length=2)
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    segment: SegmentConfig = SegmentConfig()
    guidance: GuidanceConfig = GuidanceConfig()
    tracker: TrackerConfig = TrackerConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    output: OutputConfig = OutputConfig()

    @field_validator("parts")
    @classmethod
    def _background_first(cls, parts: list[str]) -> list[str]:
        if parts[0] != "background":
            raise ValueError(f"the first part must be 'background', got {parts[0]!r}")
        if len(set(parts)) != len(parts):
            raise ValueError(f"part names must be unique, got {parts}")
        return parts

    def digest(self) -> str:
        """A short stable hash of the whole configuration (recorded in manifests and reports)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with YAML 1.2's floats: ``1e-3`` and ``5E4`` are numbers, not strings.

    YAML 1.1 (PyYAML's schema) only reads an exponent float with a dot and a signed exponent (``1.0e-3``), so
    ``--set train.unet_lr=3e-3`` would reach the config as the string ``"3e-3"`` and be refused.
    """


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def resolve_config_path(name_or_path: str | Path) -> Path:
    """Return the YAML file for a path, or for a preset name such as ``car`` (``configs/car.yaml``)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path
    preset = CONFIG_DIR / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"{name_or_path}: no such config file or preset (presets: {known})")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b=value`` into (``["a", "b"]``, value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text}: expected KEY=VALUE, e.g. train.epochs=10")
    try:
        return key.strip().split("."), yaml.load(raw, ConfigLoader) if raw.strip() else None
    except yaml.YAMLError as err:
        problem = " ".join(str(getattr(err, "problem", None) or "not valid YAML").split())
        raise ConfigError(f"--set {text}: the value is not a plain YAML value ({problem})") from None


def _apply_override(data: dict[str, Any], keys: list[str], value: Any, source: str) -> None:
    node = data
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {'.'.join(keys[: depth + 1])} is not a section")
        node = child
    node[keys[-1]] = value


RENAMED_KEYS = {"train.freq_low_band": "renamed: train.freq_reference_quirk (true for 'official', false for 'radial')"}
"""Keys of earlier versions, with what replaces them (the error a config file that still uses one gets)."""


def _format_error(source: str, error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    unknown = first["type"] in ("extra_forbidden", "unexpected_keyword_argument")
    message = RENAMED_KEYS.get(key, "unknown key") if unknown else first["msg"]
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{source}: {key}: {message}{more}"


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> JobConfig:
    """Load a job configuration.

    Args:
        path: a YAML file or a preset name (``car``, ``tiny``); None gives the production defaults.
        overrides: ``a.b=value`` strings applied on top, values parsed as YAML.

    Raises:
        ConfigError: one line naming the file (or ``--set``) and the offending key.
    """
    source = "defaults"
    data: dict[str, Any] = {}
    if path is not None:
        file = resolve_config_path(path)
        source = str(file)
        try:
            loaded = yaml.load(file.read_text(encoding="utf-8"), ConfigLoader)
        except FileNotFoundError:
            raise ConfigError(f"{file}: config file not found") from None
        except IsADirectoryError:
            raise ConfigError(f"{file}: is a folder, not a config file") from None
        except OSError as err:
            raise ConfigError(f"{file}: cannot read ({err.strerror or err.__class__.__name__})") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"{file}: not UTF-8 text (byte {err.start})") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{file}: not valid YAML{where}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{file}: top level must be a mapping of sections")
        data = loaded or {}
    for text in overrides:
        keys, value = parse_override(text)
        _apply_override(data, keys, value, f"--set {text}")
    if overrides:
        source += " with --set " + " ".join(overrides)
    try:
        # strict JSON-mode validation: YAML lists still fill tuples, but no value changes type on the way
        return JobConfig.model_validate_json(json.dumps(data, default=str), strict=True)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None


def resolve_config(config: str | Path | JobConfig | None, overrides: list[str] | tuple[str, ...] = ()) -> JobConfig:
    """A job's configuration: ``config`` itself when it is already a :class:`JobConfig` (resolved once by the
    caller, e.g. the CLI), else :func:`load_config` of the file or preset with ``overrides``.

    Raises:
        ConfigError: overrides given with an already resolved configuration, or what :func:`load_config` raises.
    """
    if not isinstance(config, JobConfig):
        return load_config(config, overrides)
    if overrides:
        raise ConfigError(f"--set {' '.join(overrides)}: overrides apply when a config loads, not to a JobConfig")
    return config
