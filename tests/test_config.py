"""Job configuration: defaults, presets, overrides and error messages."""

import inspect
import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from pipeline.config import (
    CONFIG_DIR,
    ConfigError,
    GuidanceConfig,
    JobConfig,
    SegmentConfig,
    TrainConfig,
    load_config,
    resolve_config,
)
from smite_ops.guidance import GuidanceSettings
from smite_ops.learning import LearnOptions
from smite_ops.losses import LossOptions
from smite_ops.segmentation import SegmentOptions


def test_smite_yaml_spells_out_exactly_the_defaults() -> None:
    assert load_config("smite") == JobConfig()
    # and it lists every key, so it doubles as the configuration reference
    listed = yaml.safe_load((CONFIG_DIR / "smite.yaml").read_text())
    assert listed == JobConfig().model_dump(mode="json")


def test_production_defaults_match_method() -> None:
    cfg = load_config()
    assert cfg.model.base == "stabilityai/stable-diffusion-2-1-base"
    assert (cfg.segment.window, cfg.segment.overlap) == (18, 0)
    assert (cfg.guidance.mode, cfg.guidance.window, cfg.guidance.overlap) == ("full", 16, 8)
    assert (cfg.guidance.timesteps, cfg.guidance.iterations) == ((104, 103, 102, 101), 15)
    fast = load_config(None, ["guidance.mode=fast"]).guidance  # the mode's preset fills what is not set
    assert (fast.overlap, fast.timesteps, fast.iterations) == (0, (104, 103), 3)
    assert load_config(None, ["guidance.mode=fast", "guidance.iterations=5"]).guidance.iterations == 5
    assert cfg.train.t_range == (5, 100) and cfg.segment.t_range == (95, 104)
    assert cfg.guidance.enabled and (cfg.guidance.track_weight, cfg.guidance.reg_weight) == (0.1, 0.0)
    assert not load_config("tiny").guidance.enabled


@pytest.mark.parametrize(
    ("preset", "num_parts", "crop"),
    [("car", 6, 0.6), ("horse", 5, 0.8), ("face", 10, 0.6)],
)
def test_presets_carry_their_part_lists(preset: str, num_parts: int, crop: float) -> None:
    cfg = load_config(preset)
    assert len(cfg.parts) == num_parts and cfg.parts[0] == "background"
    assert cfg.train.min_crop_ratio == crop
    assert cfg.model.base == JobConfig().model.base  # everything else stays at the defaults


def test_tiny_preset_runs_without_gpu() -> None:
    cfg = load_config("tiny")
    assert cfg.runtime.gpus_per_actor == 0 and cfg.tracker.kind == "lucas_kanade"


def test_overrides_parse_yaml_values() -> None:
    cfg = load_config("car", ["train.epochs=7", "guidance.track_weight=0.1", "segment.t_range=[90, 99]"])
    assert cfg.train.epochs == 7
    assert cfg.guidance.enabled
    assert cfg.segment.t_range == (90, 99)


def test_exponent_floats_are_numbers_in_overrides_and_files(tmp_path: Path) -> None:
    cfg = load_config("tiny", ["train.unet_lr=3e-3", "train.token_lr=2E1", "guidance.step_scale=.5e+1"])
    assert (cfg.train.unet_lr, cfg.train.token_lr, cfg.guidance.step_scale) == (0.003, 20.0, 5.0)
    assert load_config(_write(tmp_path, "train:\n  unet_lr: 1e-4\n")).train.unet_lr == 1e-4
    assert load_config(None, ["model.base=1e3x"]).model.base == "1e3x"  # only whole numbers are read as floats


def test_digest_is_stable_and_sensitive() -> None:
    assert load_config("car").digest() == load_config("car").digest()
    assert load_config("car").digest() != load_config("car", ["train.epochs=1"]).digest()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train:\n  epochz: 3\n", "train.epochz: unknown key"),
        ("train:\n  epochs: 0\n", "train.epochs: Input should be greater than 0"),
        ("segment:\n  window: 8\n  overlap: 8\n", "overlap (8) must be smaller than window (8)"),
        ("model:\n  resolution: 500\n", "model.resolution: Value error, must be a multiple of 32"),
        ("parts: [wheel, background]\n", "parts: Value error, the first part must be 'background'"),
        ("segment:\n  t_range: [100, 90]\n", "segment.t_range: Value error, must be [low, high]"),
        ("guidance:\n  timesteps: [101, 104]\n", "guidance.timesteps: Value error, must be strictly decreasing"),
        ("train: [1, 2\n", "not valid YAML at line"),
        ("- a\n- b\n", "top level must be a mapping"),
    ],
)
def test_bad_files_give_one_line_naming_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path)) and expected in message
    assert "\n" not in message


def test_bad_override_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"--set train.lr=3: train.lr: unknown key"):
        load_config(None, ["train.lr=3"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["train.epochs"])


def test_missing_file_and_unknown_preset() -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config("nope.yaml")
    with pytest.raises(ConfigError, match="no such config file or preset"):
        load_config("unicorn")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochs=true", "train.epochs: Input should be a valid integer"),
        ("train.epochs=2.0", "train.epochs: Input should be a valid integer"),
        ("train.epochs=1.0e+23", "train.epochs: Input should be a valid integer"),
        ("train.epochs=100000000000000000000000", "train.epochs: Input should be less than or equal to 1000000"),
        ("output.overlays=1", "output.overlays: Input should be a valid boolean"),
        ("model.base=123", "model.base: Input should be a valid string"),
        ("output.overlay_fps=.inf", "output.overlay_fps: Input should be a finite number"),
        ("guidance.step_scale=.nan", "guidance.step_scale: Input should be a finite number"),
        ("train.epochs=[1,", "train.epochs=[1,: the value is not a plain YAML value"),
        ("train.epochs=!!python/object/apply:os.getcwd []", "the value is not a plain YAML value"),
    ],
)
def test_overrides_are_typed_strictly_and_bad_yaml_is_one_line(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("tiny", [override])
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_strict_types_still_take_yaml_lists_for_tuples_and_ints_for_floats() -> None:
    cfg = load_config(None, ["segment.t_range=[90, 99]", "train.token_lr=1", "output.overlay_fps=12"])
    assert cfg.segment.t_range == (90, 99) and cfg.train.token_lr == 1.0 and cfg.output.overlay_fps == 12.0


def test_unreadable_config_files_are_one_line(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("model:\n  base: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text"):
        load_config(latin1)
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(ConfigError, match=r"folder\.yaml: is a folder, not a config file"):
        load_config(tmp_path / "folder.yaml")


def test_a_resolved_config_passes_through_and_refuses_overrides() -> None:
    job = load_config("tiny", ["train.epochs=3"])
    assert resolve_config(job) is job
    assert resolve_config("tiny", ["train.epochs=3"]) == job
    with pytest.raises(ConfigError, match="--set train.epochs=4: overrides apply when a config loads"):
        resolve_config(job, ["train.epochs=4"])


def test_loss_options_reach_the_loss() -> None:
    from pipeline.method.settings import learn_settings

    assert not learn_settings(load_config("smite")).loss.freq_reference_quirk
    loss = learn_settings(load_config("smite", ["train.freq_reference_quirk=true", "train.freq_high_weight=2.5"])).loss
    assert loss.freq_reference_quirk and loss.freq_high_weight == 2.5
    with pytest.raises(ConfigError, match=r"train\.freq_low_band: renamed: train\.freq_reference_quirk"):
        load_config("smite", ["train.freq_low_band=official"])


@pytest.mark.parametrize(
    ("section", "method"),
    [(TrainConfig, LearnOptions), (TrainConfig, LossOptions), (SegmentConfig, SegmentOptions),
     (GuidanceConfig, GuidanceSettings)],
)
def test_method_settings_are_declared_once(section: type, method: type) -> None:
    """A job section inherits the method's settings and restates none of them (one default, one set of bounds)."""
    assert issubclass(section, method)
    restated = set(inspect.get_annotations(section)) & {f.name for f in fields(method)}
    assert not restated, f"{section.__name__} restates {sorted(restated)} of {method.__name__}"
    defaults = {f.name: f.default for f in fields(method)}
    assert {f.name: f.default for f in fields(section) if f.name in defaults} == defaults


@pytest.mark.parametrize(
    ("override", "problem"),
    [("guidance.timesteps=[101, 104]", "guidance.timesteps: Value error, must be strictly decreasing"),
     ("train.guidance_scale=0.5", "train.guidance_scale: Input should be greater than or equal to 1"),
     ("segment.crop_expand=-0.1", "segment.crop_expand: Input should be greater than or equal to 0"),
     ("train.freq_high_inner_fraction=1.5", "train.freq_high_inner_fraction: Input should be less than or equal")],
)
def test_the_method_refuses_a_value_when_the_config_loads(override: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"defaults with --set {override}: {problem}")):
        load_config(None, [override])
