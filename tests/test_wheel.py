"""The package installs whole: a wheel built from the repository holds every module, and each imports from it."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO
from .import_graph import modules


@pytest.mark.slow  # builds and installs a wheel in subprocesses: out of the inner loop
def test_the_wheel_holds_every_module_and_each_imports_from_it(tmp_path):
    src = tmp_path / "src"  # a copy, so that the build leaves nothing (build/, *.egg-info) in the repository
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "sae_sweep", src / "sae_sweep", ignore=shutil.ignore_patterns("__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    proc = subprocess.run([*build, str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("sae_sweep-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(p.relative_to(REPO)) for p in (REPO / "sae_sweep").rglob("*.py")}
    expected |= {str(p.relative_to(REPO)) for p in (REPO / "sae_sweep" / "ready_made").rglob("*") if p.is_file()}
    assert expected <= names, f"the wheel lacks {sorted(expected - names)}"
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    code = (
        "import importlib, json, sys\n"
        "names = json.loads(sys.argv[1])\n"
        "found = {n: importlib.import_module(n).__file__ for n in names}\n"
        "print(json.dumps(found))\n"
    )
    names = sorted(modules())
    env = {"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(names)],
        cwd=tmp_path,  # not the repository: its sae_sweep must not shadow the wheel's
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(Path(f).is_relative_to(unpacked) for f in files.values()), files
