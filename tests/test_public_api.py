"""The public Python API: `pipeline` and `smite_ops` export their entry points lazily, the README's "Using it
from Python" example imports what it names, and readers of results never import Ray."""

import ast
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline
import smite_ops

REPO = Path(__file__).resolve().parent.parent
SECTION = re.compile(r"^## Using it from Python\n(.*?)^## ", re.DOTALL | re.MULTILINE)


def _example() -> str:
    """The python block of the README's "Using it from Python" section."""
    section = SECTION.search((REPO / "README.md").read_text(encoding="utf-8"))
    assert section, 'README: no "Using it from Python" section'
    block = re.search(r"```python\n(.*?)```", section.group(1), re.DOTALL)
    assert block, 'README "Using it from Python": no python block'
    return block.group(1)


def _loaded_after(code: str) -> set[str]:
    """Top-level packages imported by a fresh interpreter after running ``code``."""
    probe = f"{code}\nimport sys; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize("package", [pipeline, smite_ops])
def test_every_exported_name_is_the_object_its_module_defines(package) -> None:
    exports = package.__all__
    assert exports == sorted(exports) and set(exports) <= set(dir(package))
    for name in exports:
        value = getattr(package, name)
        module = importlib.import_module(value.__module__)
        assert getattr(module, name) is value, f"{package.__name__}.{name}"
    with pytest.raises(AttributeError, match="no attribute 'segment_everything'"):
        package.segment_everything  # noqa: B018


def test_the_readme_example_imports_only_exported_names() -> None:
    imports = [node for node in ast.parse(_example()).body if isinstance(node, ast.ImportFrom)]
    names = [alias.name for node in imports for alias in node.names]
    assert {node.module for node in imports} == {"pipeline"}
    assert {"load_config", "train_part_model", "segment_videos", "evaluate_predictions"} <= set(names)
    assert set(names) <= set(pipeline.__all__)
    exec(compile(ast.Module(body=imports, type_ignores=[]), "README.md", "exec"), {})  # the example's imports run


def test_light_imports_stay_light() -> None:
    assert not {"ray", "torch", "diffusers"} & _loaded_after("import pipeline, smite_ops")
    assert "ray" not in _loaded_after("from pipeline import load_config, output_report, VideoResult")
    assert "ray" not in _loaded_after("import pipeline.report.html, pipeline.batch.results")
    assert "ray" in _loaded_after("from pipeline import segment_videos")  # the probe sees a heavy import


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "RAY_ADDRESS": "local"}
    done = subprocess.run([sys.executable, "-c", _example()], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "car_00" in done.stdout and "mIoU" in done.stdout
    assert (tmp_path / "py_demo" / "report.html").stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "py_demo" / "pred" / "car_00").glob("*.png"))[:1] == ["00000.png"]
