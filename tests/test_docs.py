"""The contributor docs point at real code: every repository path named in README.md and docs/*.md exists,
every ``tests/file.py::test`` names a real test, and every name listed after a path (``path.py``: ``name``,
``Class.method``) is defined in that file or folder, so a reader gets from a method step to its code in one hop."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TOP = r"(?:smite_ops|pipeline|flows|tests|tools|benchmarks|configs|docs)"
PATH = re.compile(rf"`({TOP}/[\w./-]*)(?:::(\w+))?`")
NAMED = re.compile(rf"`({TOP}/[\w./-]*)`: ((?:`[\w.]+`(?:, )?)+)")
EXAMPLES = {"configs/x.yaml"}  # a placeholder in a command line, not a file of the repository


def _mentions() -> list[tuple[str, str, str]]:
    """(document, path, test name or "") for every backticked repository path."""
    return [(doc.name, path, test) for doc in DOCS for path, test in PATH.findall(doc.read_text(encoding="utf-8"))]


def _definitions(path: Path) -> str:
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return "\n".join(file.read_text(encoding="utf-8") for file in files)


def _defines(source: str, name: str) -> bool:
    definition = rf"^\s*(?:async def|def|class) {re.escape(name)}\b|^{re.escape(name)}\b.*="
    return re.search(definition, source, re.MULTILINE) is not None


def test_every_path_in_the_docs_exists() -> None:
    mentions = _mentions()
    assert len({path for _, path, _ in mentions}) > 60 and len(DOCS) >= 3
    missing = []
    for doc, path, test in mentions:
        target = REPO / path.rstrip(".")
        if path in EXAMPLES:
            continue
        if not target.exists():
            missing.append(f"{doc}: `{path}` does not exist")
        elif test and not _defines(target.read_text(encoding="utf-8"), test):
            missing.append(f"{doc}: `{path}::{test}`: no such test")
    assert not missing, "\n".join(missing)


def test_every_name_listed_after_a_path_is_defined_there() -> None:
    missing = []
    for doc in DOCS:
        for path, names in NAMED.findall(doc.read_text(encoding="utf-8")):
            if not (REPO / path).exists():
                continue  # reported by test_every_path_in_the_docs_exists
            source = _definitions(REPO / path)
            for name in re.findall(r"`([\w.]+)`", names):
                if not _defines(source, name.split(".")[-1]):
                    missing.append(f"{doc.name}: `{path}`: `{name}`")
    assert not missing, "\n".join(missing)
