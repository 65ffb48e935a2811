"""A non-editable install (`pip install .`) ships the spec library: models are found by name from any
folder, with no checkout in sight. A wheel is built offline from a copy of the sources by this interpreter
and installed into a fresh environment that has its own archspec and sees this interpreter's packages
(torch and the rest), whether this interpreter is a system Python or itself a virtual environment."""

from __future__ import annotations

import importlib.util
import json
import os
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


def _wheel(tmp_path: Path) -> Path:
    """archspec's wheel, built by this interpreter (its setuptools, no build isolation, no index) from a copy
    of the sources: the build writes its build/ and egg-info beside them."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", dist, src], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("archspec-*.whl")
    return wheel


def _site_packages() -> list[str]:
    """The folders this interpreter imports installed packages from: a venv's own, and the system's where it
    sees them (`site.getsitepackages` misses a user site, `sys.path` has it)."""
    return [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]


def _environment(path: Path, wheel: Path) -> Path:
    """A fresh virtual environment with `wheel` installed, then this interpreter's packages appended to its
    path by a `.pth` file (after the install, so that pip sees no other archspec there): its own archspec
    comes first, and the checkout's editable finder, a `.pth` of those folders, is never run."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", path], check=True, timeout=120)
    python = path / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index",
                    wheel], check=True, capture_output=True, timeout=300)
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "outer_packages.pth").write_text("".join(f"{p}\n" for p in _site_packages()))
    return python


@pytest.mark.slow
@pytest.mark.skipif(_can_build_offline() is not None, reason=str(_can_build_offline()))
def test_non_editable_install_finds_models_by_name(tmp_path):
    env = tmp_path / "env"
    python = _environment(env, _wheel(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    bare = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no checkout in sight that way either

    def run(*args) -> subprocess.CompletedProcess:
        return subprocess.run([*args], cwd=elsewhere, env=bare, capture_output=True, text=True, timeout=300)

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
