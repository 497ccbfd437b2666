"""The package's layout is the pipeline: stage folders in a fixed order, imports pointing one way.

The contracts themselves live in pyproject.toml ([tool.importlinter]); these tests run them, show
that they catch a back-arrow, and keep the package root to its few shared modules.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import distillguard

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(distillguard.__file__).resolve().parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

#: what the package root may hold: the CLI, the shared modules every layer may import, and
#: the stage folders (data/ is the shipped resource tables)
ROOT_MODULES = {"__init__.py", "cli.py", "schema.py", "errors.py", "yamlfile.py"}
STAGE_FOLDERS = {"ingest", "store", "detect", "gateway", "report", "bench", "simulate", "data", "console", "intel"}


def _lint_imports(config: Path, cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NO_COLOR="1", TERM="dumb")
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    done = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(config)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    # some versions colour their report whatever the terminal: the checks read the words
    plain = re.compile(r"\x1b\[[0-9;]*m")
    return subprocess.CompletedProcess(done.args, done.returncode, plain.sub("", done.stdout), plain.sub("", done.stderr))


def _lint_package_with(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess[str]:
    """import-linter's report on a copy of the package where ``module`` (a path under it) ends with ``line``."""
    copy = tmp_path / "distillguard"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "data"))
    (copy / "data").mkdir()
    (copy / "data" / "__init__.py").write_text("")
    target = copy / module
    target.write_text(target.read_text() + f"\n{line}\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return _lint_imports(tmp_path / "pyproject.toml", tmp_path, pythonpath=tmp_path)


def test_every_import_contract_of_the_package_is_kept():
    result = _lint_imports(ROOT / "pyproject.toml", ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_store_module_importing_the_detector_breaks_the_layers_contract(tmp_path):
    result = _lint_package_with(tmp_path, "store/stats.py", "from distillguard.detect import scan  # a back-arrow")

    assert result.returncode != 0
    assert "The pipeline's layers import downwards only BROKEN" in result.stdout
    assert "distillguard.store.stats -> distillguard.detect.scan" in result.stdout


def test_a_simulator_module_importing_the_detector_breaks_its_independence(tmp_path):
    result = _lint_package_with(tmp_path, "simulate/timing.py",
                                "from distillguard.detect import signals  # peeking at the detector")

    assert result.returncode != 0
    assert "The simulator knows nothing of the detector" in result.stdout
    assert "distillguard.simulate.timing -> distillguard.detect.signals" in result.stdout


def test_the_package_root_holds_only_the_cli_the_shared_modules_and_the_stage_folders():
    modules = {p.name for p in PACKAGE.glob("*.py")}
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert modules == ROOT_MODULES, f"modules at the package root that belong in a stage folder: {modules - ROOT_MODULES}"
    assert folders == STAGE_FOLDERS, f"unexpected folders at the package root: {folders ^ STAGE_FOLDERS}"
    for folder in folders:
        assert (PACKAGE / folder / "__init__.py").is_file(), f"{folder}/ is not a package"
