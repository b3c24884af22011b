"""A user's install works as the README says: configs and data are found the same way from a
checkout and from an installed wheel, and `make test` without the data says how to get it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sm3repro.data.download import EWT_FILES
from sm3repro.paths import DATA_ENV, config_dir, ewt_data_dir

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_checkout_uses_the_top_level_conf() -> None:
    assert config_dir() == REPO_ROOT / "conf"


def test_data_folder_is_the_checkouts_unless_the_variable_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert ewt_data_dir(REPO_ROOT) == REPO_ROOT / "data" / "ud-english-ewt"
    assert ewt_data_dir() == Path("data/ud-english-ewt")  # relative: as the data config resolves
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert ewt_data_dir(REPO_ROOT) == ewt_data_dir() == tmp_path


def test_wheel_lists_every_package() -> None:
    """pyproject names the packages (conf/ is mapped in); a new subpackage must be added."""
    setuptools_cfg = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(p.parent.relative_to(REPO_ROOT).parts)
        for p in (REPO_ROOT / "sm3repro").rglob("__init__.py")
    }
    assert set(setuptools_cfg["packages"]) == on_disk | {"sm3repro.conf"}
    assert setuptools_cfg["package-dir"] == {"sm3repro.conf": "conf"}


def test_wheel_carries_every_data_file_the_package_reads() -> None:
    """Non-Python files inside the package (SM3's kernel source) must be package data."""
    import fnmatch

    setuptools_cfg = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    data = setuptools_cfg["package-data"]
    for path in (REPO_ROOT / "sm3repro").rglob("*"):
        if path.is_dir() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        package = ".".join(path.parent.relative_to(REPO_ROOT).parts)
        patterns = data.get(package, [])
        assert any(fnmatch.fnmatch(path.name, p) for p in patterns), f"{path} is not package data"


def test_make_test_without_data_network_or_mirror_says_how(tmp_path: Path) -> None:
    """`make test` gets the data first; with none to get it stops with `make data`'s how-to."""
    empty = tmp_path / "ewt"
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_MIRROR", "MAKEFLAGS")}
    env[DATA_ENV] = str(empty)
    proc = subprocess.run(
        # Port 9 on this host refuses at once: no network, and nothing leaves the machine.
        ["make", "-C", str(REPO_ROOT), "test", f"PY={sys.executable}",
         "EWT_BASE_URL=http://127.0.0.1:9/", "ARGS=--collect-only"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "make data DATA_MIRROR=/path/to/folder" in proc.stderr, proc.stderr
    assert f"copy those three files into {empty}" in proc.stderr
    assert "collected" not in proc.stdout  # pytest never started
    assert not any((empty / name).exists() for name in EWT_FILES.values())


@pytest.mark.slow
def test_installed_wheel_runs_from_any_folder(tmp_path: Path, ewt_dir: Path) -> None:
    """A non-editable install carries conf/ as sm3repro/conf: the entry points compose the
    config outside any checkout. Built and installed offline, without dependencies (the
    running environment already has them)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "sm3repro", "conf"):
        copy = shutil.copytree if (REPO_ROOT / name).is_dir() else shutil.copy
        copy(REPO_ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", source],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("sm3repro-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", site, wheel],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "disabled"}

    def run(*argv: str | Path) -> str:
        proc = subprocess.run(
            argv, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    found = run(sys.executable, "-c", "from sm3repro.paths import config_dir; print(config_dir())")
    assert Path(found.strip()) == site / "sm3repro" / "conf"
    job = run(site / "bin" / "sm3repro-train", "--cfg", "job", "optimizer=adam")
    assert "name: adam" in job and "experiment_name: default" in job
    assert "usage" in run(site / "bin" / "sm3repro-report", "--help")
    # The memory arm finds its data config and the data the way sm3repro-train does.
    env["SM3REPRO_DATA"] = str(ewt_dir)
    sample = run(sys.executable, "-c", (
        "from sm3repro.arms.memory.arm import ArmConfig, prepare_data, _child_env; "
        "print(prepare_data(ArmConfig(max_train_sentences=40), 200)); "
        "print(_child_env()['PYTHONPATH'].split(':')[0])"
    ))  # fmt: skip
    npz, import_root = sample.strip().splitlines()
    assert (elsewhere / npz).is_file() and Path(import_root) == site
