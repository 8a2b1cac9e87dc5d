"""The README's commands work as written: every `smite` command line parses against the real CLI, every
`make` target exists, `hf` (not the retired `huggingface-cli`) is installed, and the CPU blocks marked
``<!-- readme-test: run -->`` run as written in an empty folder."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from string import Template

import click
import pytest
import typer

from flows.cli import app

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"(<!-- readme-test: run -->\n)?```bash\n(.*?)```", re.DOTALL)
BIN = Path(sys.executable).parent


def _blocks() -> list[tuple[bool, list[str]]]:
    """Each bash block: (marked to run, its command lines with continuations joined and comments dropped)."""
    blocks = []
    for marker, body in BLOCK.findall(README):
        joined = body.replace("\\\n", " ")
        lines = [line.split(" #")[0].strip() for line in joined.splitlines()]
        blocks.append((bool(marker), [line for line in lines if line and not line.startswith("#")]))
    return blocks


def _commands(program: str) -> list[list[str]]:
    """Every line of a bash block that runs ``program``, as argv (variables set in the block expanded)."""
    found = []
    for _, lines in _blocks():
        variables: dict[str, str] = {}
        for line in lines:
            if match := re.fullmatch(r"([A-Z_]+)=(\S+)", line):
                variables[match.group(1)] = match.group(2)
                continue
            argv = shlex.split(Template(line).safe_substitute(variables))
            if argv and argv[0] == program:
                found.append(argv)
    return found


def test_every_smite_command_line_parses_against_the_cli() -> None:
    group = typer.main.get_command(app)
    commands = _commands("smite")
    assert len(commands) >= 15
    for argv in commands:
        command = group.get_command(click.Context(group), argv[1])
        assert command is not None, f"README: unknown command {shlex.join(argv)}"
        try:
            command.make_context(argv[1], argv[2:])
        except click.UsageError as err:
            pytest.fail(f"README: {shlex.join(argv)}: {err.format_message()}")


def test_make_targets_and_tools_named_in_the_readme_exist() -> None:
    makefile = (REPO / "Makefile").read_text()
    for argv in _commands("make"):
        assert re.search(rf"^{re.escape(argv[1])}:", makefile, re.MULTILINE), f"README: make {argv[1]}: no target"
    assert "huggingface-cli" not in README  # huggingface_hub installs `hf` only
    assert _commands("hf") and (shutil.which("hf") or (BIN / "hf").exists())


@pytest.mark.slow
def test_cpu_blocks_run_as_written(tmp_path: Path) -> None:
    blocks = [lines for marked, lines in _blocks() if marked]
    assert blocks, "no block marked <!-- readme-test: run -->"
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env |= {"PATH": f"{BIN}{os.pathsep}{env['PATH']}", "PYTHONPATH": str(REPO), "PREFECT_HOME": str(tmp_path / "p"),
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300", "OMP_NUM_THREADS": "1"}
    for lines in blocks:
        for line in lines:
            result = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                                    timeout=900)
            assert result.returncode == 0, f"README: {line}\n{result.stderr[-3000:]}"
    assert (tmp_path / "labels" / "exports" / "coco" / "annotations.json").is_file()
    assert (tmp_path / "labels" / "all.html").is_file()
