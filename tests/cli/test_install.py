"""A non-editable install (`pip install .`) ships the spec library: models are found by name from any
folder, with no checkout in sight. Built offline from a copy of the sources into a fresh environment
that sees this one's packages (torch and the rest) but has its own archspec."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from reference_counts import BY_NAME

SOURCES = ["pyproject.toml", "README.md", "archspec", "compiler", "runtime", "specs"]


def _can_build_offline() -> str | None:
    """Why this environment cannot build a wheel without the network, or None."""
    try:
        import setuptools
    except ImportError:
        return "setuptools is not installed"
    version = tuple(int(p) for p in setuptools.__version__.split(".")[:2])
    if version < (68, 0):
        return f"setuptools {setuptools.__version__} is older than the 68 the build needs"
    if version < (70, 1) and importlib.util.find_spec("wheel") is None:  # bdist_wheel moved into setuptools 70.1
        return "setuptools before 70.1 needs the wheel package to build a wheel"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_can_build_offline() is not None, reason=str(_can_build_offline()))
def test_non_editable_install_finds_models_by_name(tmp_path):
    src = tmp_path / "src"  # a copy: the build writes its build/ and egg-info beside the sources
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", env], check=True)
    python = env / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
                    "--no-build-isolation", "--no-index", src], check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args) -> subprocess.CompletedProcess:
        return subprocess.run([*args], cwd=elsewhere, capture_output=True, text=True, timeout=300)

    where = run(python, "-c", "import archspec, archspec.specs; print(archspec.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(env), where.stdout + where.stderr  # not the checkout
    p = run(env / "bin" / "archspec", "compile", "delugenet146", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["params"] == BY_NAME["delugenet146"].params
    p = run(env / "bin" / "archspec", "list", "--json")
    assert p.returncode == 0, p.stderr
    assert {row["name"]: row["params"] for row in json.loads(p.stdout)} == {n: r.params for n, r in BY_NAME.items()}
    p = run(env / "bin" / "archspec", "check", "delugenet14")
    assert p.returncode == 2 and "did you mean 'delugenet146'" in p.stderr
