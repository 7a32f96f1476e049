"""Packaging facts that need no network: extras instead of a hard AG2 pin, one version, the license,
and .ci/run running exactly the README's test command. (Installs into fresh venvs: .ci/matrix.sh.)"""

from __future__ import annotations

import re
from importlib.metadata import metadata, version
from pathlib import Path

import pytest

import persistency

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requirements}


def test_no_hard_requirement_on_either_ag2_distribution() -> None:
    assert not _names(PROJECT["dependencies"]) & {"ag2", "autogen"}
    extras = PROJECT["optional-dependencies"]
    assert extras["ag2"] == ["ag2>=0.10,<1"]
    assert extras["autogen"] == ["autogen>=0.10,<0.15"]


def test_extras_never_pull_both_distributions() -> None:
    extras = PROJECT["optional-dependencies"]

    def closure(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        out: set[str] = set()
        for req in extras[name]:
            m = re.fullmatch(r"ag2-persistency\[([^\]]+)\]", req)
            if m:
                for sub in m.group(1).split(","):
                    if sub not in seen:
                        out |= closure(sub, seen | {name})
            else:
                out |= _names([req])
        return out

    for name in extras:
        assert not {"ag2", "autogen"} <= closure(name), name
    assert "autogen" in closure("test")  # .ci/run's install brings an AG2 Classic
    assert "autogen" in closure("openai") and "ag2" in closure("ag2-openai")


def test_one_source_for_the_version() -> None:
    assert "version" in PROJECT["dynamic"] and "version" not in PROJECT
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "persistency.__version__"}
    assert version("ag2-persistency") == persistency.__version__


def test_license_is_spdx_and_shipped() -> None:
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    meta = metadata("ag2-persistency")
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("Classifier") and meta["Keywords"]
    assert (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").count("## [Unreleased]") == 1


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [c for c in re.findall(r"```bash\n(.*?)```", readme, re.S) if "'.[test]'" in c and "pytest" in c]
    assert len(commands) == 1
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[0].strip() in ci.splitlines()
    assert "bash .ci/matrix.sh" in ci and "mkdocs build --strict" in ci
