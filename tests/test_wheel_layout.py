"""The wheel built from the repository installs our names only: ``persistency`` (with its providers
as ``persistency.providers``), no top-level ``providers`` module."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_has_no_top_level_providers_module(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy, so the build leaves nothing in the repository
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__"))
    out = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                   check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = out.glob("ag2_persistency-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert tops == {"persistency"}, sorted(tops)
    for module in ("filesystem/__init__.py", "filesystem/provider.py", "redis", "s3", "py.typed"):
        assert any(n.startswith(f"persistency/providers/{module}") for n in names), module
    top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["persistency"]
