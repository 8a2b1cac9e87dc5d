"""The declared dependency ranges hold for the installed (tested) environment, and the cloud extras work."""

import tomllib
from importlib import metadata
from pathlib import Path

import fsspec
import pytest
from packaging.requirements import Requirement

PYPROJECT = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())


def _requirement(name: str, group: str | None = None) -> Requirement:
    project = PYPROJECT["project"]
    listed = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return next(r for r in map(Requirement, listed) if r.name == name)


@pytest.mark.parametrize("name", ["ray", "prefect"])
def test_ray_and_prefect_ranges_are_bounded_and_hold_the_installed_version(name: str) -> None:
    requirement = _requirement(name)
    operators = {spec.operator for spec in requirement.specifier}
    assert {">=", "<"} <= operators, f"{requirement}: needs a lower and an upper bound"
    installed = metadata.version(name)
    assert requirement.specifier.contains(installed), f"{name} {installed} not in {requirement}"


@pytest.mark.parametrize(("group", "package", "url", "protocol"),
                         [("s3", "s3fs", "s3://bucket/masks", "s3"), ("gcs", "gcsfs", "gs://bucket/masks", "gs")])
def test_cloud_extras_give_fsspec_their_protocol(group: str, package: str, url: str, protocol: str) -> None:
    assert _requirement(package, group).specifier.contains(metadata.version(package))
    fs, path = fsspec.core.url_to_fs(url, token="anon") if protocol == "gs" else fsspec.core.url_to_fs(url, anon=True)
    assert protocol in fs.protocol and path == "bucket/masks"
