"""Mutation testing of the method modules with mutmut: the score per module and every surviving mutant.

Each module of ``smite_ops`` is mutated in its own copy of the working tree (tracked and untracked,
non-ignored files; the checkout itself is never touched) and checked against only its own fast test files
(``MODULE_TESTS``), with one worker process and one thread by default so that it can run beside other work.
Not in CI: a module takes from minutes (voting, lowpass) to hours (guidance, attention).

    python benchmarks/mutation.py voting losses       # some modules
    python benchmarks/mutation.py --jobs 4            # all of them, four mutants at a time
    python benchmarks/mutation.py guidance --mutants '*energy__mutmut_*'   # only some mutants (fnmatch)
    make mutation                                     # all of them

Score = killed (or timed out) / (killed + timed out + survived + not covered by the module's tests), in %.
The report lists each surviving mutant's diff; add a test for it or note it as equivalent.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE_TESTS: dict[str, list[str]] = {
    "guidance": ["tests/test_guidance.py", "tests/test_guidance_oracles.py", "tests/test_guidance_schedule.py"],
    "learning": ["tests/test_learning.py", "tests/test_learning_oracles.py", "tests/test_train_resume_state.py"],
    "losses": ["tests/test_losses.py", "tests/test_losses_contracts.py", "tests/test_track_energy_weights.py"],
    "voting": ["tests/test_voting.py", "tests/test_voting_contracts.py", "tests/test_track_energy_weights.py"],
    "was": ["tests/test_was.py", "tests/test_was_contracts.py"],
    "lowpass": ["tests/test_lowpass.py", "tests/test_lowpass_contracts.py"],
    "attention": ["tests/test_attention.py", "tests/test_attention_contracts.py"],
    "segmentation": [
        "tests/test_segmentation.py", "tests/test_segmentation_pasteback.py", "tests/test_segmentation_contracts.py"
    ],
}
KILLED = {"killed", "timeout", "caught by type check"}
LIVE = {"survived", "no tests"}
RESULT_LINE = re.compile(r"^\s+(\S+): (.+)$")


@dataclass
class ModuleResult:
    """Mutant counts of one module and the names of its live (surviving or uncovered) mutants."""

    module: str
    statuses: Counter[str] = field(default_factory=Counter)
    live: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""

    @property
    def score(self) -> float:
        """Killed share of the decided mutants in %, NaN when none was decided."""
        killed = sum(self.statuses[s] for s in KILLED)
        decided = killed + sum(self.statuses[s] for s in LIVE)
        return 100.0 * killed / decided if decided else float("nan")


def copy_tree(dest: Path) -> None:
    """Copy the checkout's tracked and untracked, non-ignored files to ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def mutmut_config(module: str) -> str:
    """The ``[tool.mutmut]`` table that mutates one module against its own tests, slow tests left out."""
    tests = ", ".join(f'"{t}"' for t in MODULE_TESTS[module])
    return f"""
[tool.mutmut]
source_paths = ["smite_ops"]
only_mutate = ["smite_ops/{module}.py"]
also_copy = ["pipeline", "flows", "configs"]
pytest_add_cli_args_test_selection = [{tests}]
pytest_add_cli_args = ["-m", "not slow", "-p", "no:cacheprovider"]
process_isolation = "forkserver"
use_git_change_detection = false
"""


def mutmut(args: list[str], cwd: Path, log: Path | None = None, minutes: float | None = None) -> str:
    """Run ``mutmut ARGS`` in ``cwd`` (threads 1); return its stdout, or append it to ``log``.

    With ``minutes``, the run (its whole process group: mutmut forks its workers) is stopped after that time;
    the mutants checked so far keep their results.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": ""}
    command = [sys.executable, "-m", "mutmut", *args]
    if log is None:
        return subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout
    with log.open("a") as sink:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            process.wait(timeout=None if minutes is None else 60 * minutes)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
    return ""


def run_module(
    module: str, workdir: Path, jobs: int, minutes: float | None, mutants: list[str] | None = None
) -> ModuleResult:
    """Mutate one module in a fresh copy under ``workdir`` and collect the results.

    The run stops after ``minutes``; with ``mutants`` (mutmut names or fnmatch patterns) only those are checked.
    """
    copy = workdir / module
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir(parents=True)
    copy_tree(copy)
    with (copy / "pyproject.toml").open("a") as config:
        config.write(mutmut_config(module))
    started = time.perf_counter()
    mutmut(["run", "--max-children", str(jobs), *(mutants or [])], copy, log=workdir / f"{module}.log", minutes=minutes)
    result = collect(module, workdir)
    result.seconds = time.perf_counter() - started
    return result


def collect(module: str, workdir: Path) -> ModuleResult:
    """The results of a module's (finished or stopped) run in ``workdir``."""
    result = ModuleResult(module)
    copy = workdir / module
    for line in mutmut(["results", "--all", "true"], copy).splitlines():
        match = RESULT_LINE.match(line)
        if match:
            name, status = match.groups()
            result.statuses[status] += 1
            if status in LIVE:
                result.live.append(name)
    if not result.statuses:
        result.error = f"no results, see {workdir / f'{module}.log'}"
    return result


def report(results: list[ModuleResult], workdir: Path) -> None:
    """Print the score table, then each live mutant's status and diff."""
    columns = ("killed", "timeout", "survived", "no tests", "not checked")
    print(f"| module | mutants | {' | '.join(columns)} | other | score % | minutes |")
    print("|---|" + "---:|" * (len(columns) + 4))
    for r in results:
        counts = [r.statuses[c] for c in columns]
        other = sum(r.statuses.values()) - sum(counts)
        print(
            f"| {r.module} | {sum(r.statuses.values())} | {' | '.join(map(str, counts))} | {other} | {r.score:.1f} | "
            f"{r.seconds / 60:.1f} |" + (f" {r.error}" if r.error else "")
        )
    for r in results:
        for name in r.live:
            print()
            print(mutmut(["show", name], workdir / r.module).rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"default: all of {', '.join(MODULE_TESTS)}")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "smite-mutation",
                        help="copies, logs and mutmut state (one folder per module)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at a time (each a process)")
    parser.add_argument("--minutes", type=float, help="stop each module's run after this time (partial score)")
    parser.add_argument("--mutants", nargs="+", metavar="PATTERN",
                        help="check only these mutants: mutmut names or fnmatch patterns, e.g. '*energy__mutmut_*'")
    parser.add_argument("--report-only", action="store_true", help="report the runs already in --workdir")
    args = parser.parse_args()
    unknown = sorted(set(args.modules) - set(MODULE_TESTS))
    if unknown:
        parser.error(f"unknown modules {unknown}; choose from {list(MODULE_TESTS)}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = args.workdir.resolve()
    modules = args.modules or list(MODULE_TESTS)
    if args.report_only:
        results = [collect(module, workdir) for module in modules if (workdir / module).is_dir()]
    else:
        results = [run_module(module, workdir, args.jobs, args.minutes, args.mutants) for module in modules]
    report(results, workdir)


if __name__ == "__main__":
    main()
