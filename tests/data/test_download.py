"""Fetching EWT: mirror copy, checksum verification, atomic writes, failing fast offline."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sm3repro.data import download
from sm3repro.data.download import (
    EWT_FILES,
    EWT_SHA256,
    DownloadError,
    fetch_ewt,
    sha256_file,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: nothing listens, refused at once
DEV = EWT_FILES["dev"]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy in the environment would turn "refused at once" into a proxy round trip.
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.delenv("DATA_MIRROR", raising=False)


def leftovers(folder: Path) -> list[str]:
    """Temporary files a failed write might have left behind."""
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def tampered_mirror(ewt_dir: Path, tmp_path: Path) -> Path:
    """A mirror whose dev file has one changed byte (train/test are links to the real ones)."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in (EWT_FILES["train"], EWT_FILES["test"]):
        (mirror / name).symlink_to(ewt_dir / name)
    data = bytearray((ewt_dir / DEV).read_bytes())
    data[1000] ^= 0x01
    (mirror / DEV).write_bytes(bytes(data))
    return mirror


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc" * 1_000_000)  # several read chunks
    assert sha256_file(path) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()


def test_pinned_names_and_sums() -> None:
    assert set(EWT_FILES) == {"train", "dev", "test"}
    assert set(EWT_SHA256) == set(EWT_FILES.values())
    assert all(len(s) == 64 and set(s) <= set("0123456789abcdef") for s in EWT_SHA256.values())


def test_copy_from_mirror_verifies(ewt_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "data" / "ewt"  # created, parents too
    paths = fetch_ewt(dest, mirror=ewt_dir)
    assert paths == [dest / name for name in EWT_FILES.values()]
    for path in paths:
        assert sha256_file(path) == EWT_SHA256[path.name]
        assert path.stat().st_mode & 0o644 == 0o644
    assert (dest / "LICENSE.txt").read_bytes() == (ewt_dir / "LICENSE.txt").read_bytes()
    assert leftovers(dest) == []


def test_present_files_are_kept_without_network(
    ewt_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "ewt"
    fetch_ewt(dest, mirror=ewt_dir)
    before = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    monkeypatch.setattr(download, "BASE_URL", UNREACHABLE)
    fetch_ewt(dest)  # no mirror and no network needed: everything verifies in place
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == before


def test_wrong_present_file_is_replaced(ewt_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "ewt"
    dest.mkdir()
    (dest / DEV).write_text("not the treebank\n")
    fetch_ewt(dest, mirror=ewt_dir)
    assert sha256_file(dest / DEV) == EWT_SHA256[DEV]


def test_tampered_mirror_file_is_rejected(tampered_mirror: Path, tmp_path: Path) -> None:
    dest = tmp_path / "ewt"
    with pytest.raises(DownloadError) as info:
        fetch_ewt(dest, mirror=tampered_mirror)
    message = str(info.value)
    assert DEV in message and "checksum mismatch" in message
    assert EWT_SHA256[DEV] in message
    assert sha256_file(tampered_mirror / DEV) in message
    assert not (dest / DEV).exists()
    assert leftovers(dest) == []


def test_mirror_missing_a_file(ewt_dir: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / EWT_FILES["train"]).symlink_to(ewt_dir / EWT_FILES["train"])
    with pytest.raises(DownloadError, match=f"has no {DEV}"):
        fetch_ewt(tmp_path / "ewt", mirror=mirror)
    with pytest.raises(DownloadError, match="does not exist"):
        fetch_ewt(tmp_path / "ewt", mirror=tmp_path / "nowhere")


def test_no_network_no_mirror_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "BASE_URL", UNREACHABLE)
    dest = tmp_path / "ewt"
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        fetch_ewt(dest)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert EWT_FILES["train"] in message and UNREACHABLE in message
    assert "make data DATA_MIRROR=/path/to/folder" in message and str(dest) in message
    assert not any(p.suffix == ".conllu" for p in dest.iterdir())


def test_unanswered_connection_gives_up_after_connect_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A black-holed network: the connection attempt hangs, then times out as a real one would.
    def hang(*args: object, **kwargs: object) -> None:
        time.sleep(3)
        raise TimeoutError("timed out")

    monkeypatch.setattr(download.socket, "create_connection", hang)
    monkeypatch.setattr(download, "CONNECT_TIMEOUT", 0.2)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="no answer from example.invalid"):
        fetch_ewt(tmp_path / "ewt", timeout=30, base_url="https://example.invalid/ewt/")
    assert time.monotonic() - start < 2


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "DATA_MIRROR"}
    base.update(no_proxy="*", PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, "-m", "sm3repro.data.download", *args],
        cwd=REPO_ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_with_mirror(ewt_dir: Path, tmp_path: Path) -> None:
    result = run_cli("--dest", str(tmp_path / "ewt"), "--mirror", str(ewt_dir))
    assert result.returncode == 0, result.stderr
    assert "3 files verified" in result.stdout
    assert sha256_file(tmp_path / "ewt" / DEV) == EWT_SHA256[DEV]


def test_cli_honours_data_mirror_env(ewt_dir: Path, tmp_path: Path) -> None:
    result = run_cli(
        "--dest",
        str(tmp_path / "ewt"),
        "--base-url",
        UNREACHABLE,
        env={"DATA_MIRROR": str(ewt_dir)},
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "ewt").glob("*.conllu")) == sorted(EWT_FILES.values())


def test_cli_offline_fails_fast_without_traceback(tmp_path: Path) -> None:
    start = time.monotonic()
    result = run_cli("--dest", str(tmp_path / "ewt"), "--base-url", UNREACHABLE)
    assert time.monotonic() - start < 10
    assert result.returncode == 1
    assert "make data DATA_MIRROR=" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_checksum_mismatch(tampered_mirror: Path, tmp_path: Path) -> None:
    result = run_cli("--dest", str(tmp_path / "ewt"), "--mirror", str(tampered_mirror))
    assert result.returncode == 1
    assert DEV in result.stderr and EWT_SHA256[DEV] in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ewt" / DEV).exists()


@pytest.fixture
def http_mirror(tampered_mirror: Path):
    """A loopback HTTP server over the tampered mirror (real train/test, altered dev)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tampered_mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join()


def test_download_over_http_verifies_each_file(http_mirror: str, tmp_path: Path) -> None:
    dest = tmp_path / "ewt"
    with pytest.raises(DownloadError) as info:
        fetch_ewt(dest, base_url=http_mirror)
    # train arrived verified; dev (one byte changed) was refused and never written
    assert sha256_file(dest / EWT_FILES["train"]) == EWT_SHA256[EWT_FILES["train"]]
    assert (dest / EWT_FILES["train"]).stat().st_mode & 0o644 == 0o644
    assert f"checksum mismatch for {DEV} from {http_mirror}{DEV}" in str(info.value)
    assert not (dest / DEV).exists()
    assert [p.name for p in dest.iterdir()] == [EWT_FILES["train"]]  # no temporary left


def test_download_names_a_missing_file(http_mirror: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        fetch_ewt(tmp_path / "ewt", base_url=http_mirror + "elsewhere/")
    assert "make data DATA_MIRROR=" in str(info.value)
