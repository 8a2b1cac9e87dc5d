"""Job configuration: pydantic models loaded from YAML, with `--set a.b=value` overrides.

The model defaults are the production defaults of METHOD.md (SD 2.1-base, the reference's windows, learning and
guidance knobs); `configs/smite.yaml` spells them out and a test keeps the two equal. Presets (`car.yaml`,
`horse.yaml`, `face.yaml`, `tiny.yaml`) hold only what differs. Every error names the file and the key.

Values from YAML are checked strictly: no coercion between types (``true`` is not an integer, ``1`` is not a
boolean, ``2.0`` is not an integer), and every float must be finite.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from smite_ops.errors import InputError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]
Timestep = Annotated[int, Field(ge=0, le=999)]
MAX_EPOCHS = 1_000_000
Epochs = Annotated[int, Field(gt=0, le=MAX_EPOCHS)]
EpochIndex = Annotated[int, Field(ge=0, le=MAX_EPOCHS)]


class ConfigError(InputError):
    """A configuration file or override is invalid; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _ordered(value: tuple[int, int]) -> tuple[int, int]:
    if value[0] > value[1]:
        raise ValueError(f"must be [low, high] with low <= high, got {list(value)}")
    return value


TimestepRange = Annotated[tuple[Timestep, Timestep], AfterValidator(_ordered)]


def _decreasing(value: list[int]) -> list[int]:
    if any(a <= b for a, b in itertools.pairwise(value)):
        raise ValueError(f"must be strictly decreasing, got {value}")
    return value


class ModelConfig(_Section):
    """Which diffusion backbone to use and how to run it."""

    base: str = Field("stabilityai/stable-diffusion-2-1-base", description="hub id, local folder or fsspec URL")
    resolution: PositiveInt = Field(512, description="working resolution in pixels (square)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 (or float16) on CUDA, float32 on CPU"
    )
    allow_download: bool = Field(False, description="fetch the backbone from the hub when it is not cached")

    @field_validator("resolution")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"must be a multiple of 32, got {value}")
        return value


class TrainConfig(_Section):
    """Learning from reference images (METHOD.md §3)."""

    epochs: Epochs = 300
    token_epochs: EpochIndex = Field(51, description="stage 1: epochs that train only the token vectors")
    stage2: Literal["tokens_frozen", "joint"] = Field(
        "tokens_frozen", description="tokens_frozen: the reference; joint: tokens and K/V together (paper)"
    )
    trainable: Literal["crossattn_kv", "crossattn", "crossattn_kv+selfattn_qk", "text_embeds"] = Field(
        "crossattn_kv", description="UNet weights trained in stage 2 besides the tokens (see smite_ops.learning)"
    )
    token_lr: Annotated[float, Field(gt=0)] = 0.1
    unet_lr: Annotated[float, Field(gt=0)] = 1e-6
    t_range: TimestepRange = (5, 100)
    guidance_scale: Annotated[float, Field(ge=1)] = 100.0
    coef_sd: NonNegativeFloat = 0.005
    coef_freq: NonNegativeFloat = 0.001
    freq_from_epoch: EpochIndex = 6
    loss_scale: Annotated[float, Field(gt=0)] = Field(
        0.01, description="the loss is multiplied by this before backward (official 0.01: with Adam, a larger eps)"
    )
    freq_low_band: Literal["radial", "official"] = Field(
        "radial", description="frequency loss low band: a radial low-pass, or the official all-pass mask (a bug)"
    )
    min_crop_ratio: Fraction = 0.8
    flip: bool = True
    validation_t_range: TimestepRange = (95, 105)
    seed: int = 777


class _Windowed(_Section):
    """A section that splits videos into windows of ``window`` frames overlapping by ``overlap``."""

    window: PositiveInt
    overlap: NonNegativeInt

    @model_validator(mode="after")
    def _overlap_below_window(self) -> _Windowed:
        if self.overlap >= self.window:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than window ({self.window})")
        return self


class SegmentConfig(_Windowed):
    """Unguided window segmentation (METHOD.md §4.1-4.3, 4.6, 4.7)."""

    window: PositiveInt = 18
    overlap: NonNegativeInt = 0
    t_range: TimestepRange = (95, 104)
    hierarchical: bool = Field(True, description="coarse-to-fine crop mode (METHOD.md §4.6)")
    max_side: PositiveInt = Field(812, description="hierarchical mode: longest side of native frames, in pixels")
    crop_expand: NonNegativeFloat = Field(0.04, description="object box expansion per side, fraction of box size")
    multi_crop: bool = Field(False, description="tiled 4-crop mode (the reference's face mode, METHOD.md §4.7)")
    seed: int = 777
    pooled_group_norm: bool = Field(
        True, description="group norms pool over the frames of a pass, as the official inflated UNet (§2.2)"
    )


GUIDANCE_MODE_PRESETS: dict[str, dict[str, Any]] = {
    "filter": {"overlap": 0, "timesteps": [104, 103, 102, 101], "iterations": 15},
    "fast": {"overlap": 0, "timesteps": [104, 103], "iterations": 3},
    "full": {"overlap": 8, "timesteps": [104, 103, 102, 101], "iterations": 15},
}
"""Values of ``overlap``, ``timesteps`` and ``iterations`` that each ``guidance.mode`` takes when they are unset or
null (``full``: the guidance shipped before issue 16; ``filter`` runs no latent update, so only its overlap matters)."""


class GuidanceConfig(_Windowed):
    """Spatio-temporal latent guidance (METHOD.md §4.4, §5-7); off when both weights are 0 (the reference's default).

    ``mode`` picks the phase-B refinement (``smite_ops.temporal``): ``full`` (default) = the reference's guided loop
    (tracking term only, soft KL loss: the best row of ``benchmarks/ablation.py``); ``fast`` = the zero-UNet
    track-vote filter, then a few latent updates toward the filtered scores, windows without overlap (1/23 of the
    cost); ``filter`` = the filter alone. ``overlap``, ``timesteps`` and ``iterations`` left null take the mode's preset
    (:data:`GUIDANCE_MODE_PRESETS`); ``benchmarks/temporal_frontier.py`` measures the modes (README).
    """

    mode: Literal["filter", "fast", "full"] = Field("full", description="phase-B refinement (smite_ops.temporal)")
    filter_radius: NonNegativeInt = Field(0, description="track-vote filter: spread of each correction, in map cells")
    track_weight: NonNegativeFloat = 0.1
    reg_weight: NonNegativeFloat = 0.0
    window: PositiveInt = 16
    overlap: NonNegativeInt = 8
    timesteps: Annotated[list[Timestep], AfterValidator(_decreasing)] = Field(
        default_factory=lambda: [104, 103, 102, 101], min_length=1
    )
    iterations: PositiveInt = 15
    step_scale: Annotated[float, Field(gt=0)] = 10.0
    # a two-item list, not a tuple: the mode-preset validator hands Python data to strict validation, where
    # only a list accepts YAML's sequences
    betas: Annotated[list[Fraction], Field(min_length=2, max_length=2)] = Field(default_factory=lambda: [0.9, 0.999])
    eps: Annotated[float, Field(gt=0)] = 1e-5
    slice_frames: PositiveInt = 4
    voting_window: PositiveInt = 15
    dct_threshold: Fraction = 0.4
    first_step_threshold: Fraction = 0.999
    lowpass: Literal["spatial", "spatiotemporal"] = Field(
        "spatial", description="spatial: the reference's filter; spatiotemporal: the paper's 3D low-pass"
    )
    temporal_threshold: Fraction | None = Field(None, description="frame-axis cutoff (None: dct_threshold)")
    dct_span: Literal["slice", "window"] = Field("slice", description="DCT over each optimised slice or whole window")
    track_loss: Literal["hard", "soft"] = Field(
        "soft", description="hard: CE against voted labels (reference); soft: KL against the voted vectors"
    )
    track_projection: Literal["official", "pixel_centre"] = Field(
        "official", description="track pixel -> map cell: official round(x/8-0.5) or floor((x+0.5)/8)"
    )
    gradient_checkpointing: bool = False

    @model_validator(mode="before")
    @classmethod
    def _mode_presets(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = GUIDANCE_MODE_PRESETS.get(data.get("mode") or "full", {})
        return {**data, **{key: value for key, value in preset.items() if data.get(key) is None}}

    @property
    def enabled(self) -> bool:
        return self.track_weight > 0 or self.reg_weight > 0


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
    placement_timeout_s: Annotated[float, Field(gt=0)] = Field(
        60.0, description="how long to wait for Ray to place the shard actors (e.g. GPU nodes scaling up), s"
    )
    runtime_env: dict[str, Any] | None = Field(
        None, description="Ray runtime_env of a job that starts or joins Ray (e.g. py_modules, pip, env_vars)"
    )


class OutputConfig(_Section):
    """Which outputs a segmentation job writes besides the Parquet masks."""

    overlays: bool = True
    tracks: bool = False
    overlay_fps: Annotated[float, Field(gt=0)] | None = Field(None, description="None: the source video's fps")


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
        return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None
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


def _format_error(source: str, error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
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
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
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
