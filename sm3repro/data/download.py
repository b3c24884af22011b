"""Fetch UD English-EWT r2.16 (the study's data, ``make data``) and verify its checksums.

The three ``.conllu`` files come from a local mirror folder when one is given (``--mirror``
or, for the CLI, the ``DATA_MIRROR`` environment variable), otherwise from GitHub. Every
file is written through a temporary file in the destination folder and renamed into place
only once its SHA-256 matches the pinned sum, so the destination never holds a partial or
wrong file under its final name.

    python -m sm3repro.data.download --dest data/ud-english-ewt [--mirror DIR] [--timeout S]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import logging
import os
import socket
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

EWT_RELEASE = "r2.16"
BASE_URL = f"https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/{EWT_RELEASE}/"

# split -> file name, and file name -> pinned SHA-256 of the r2.16 files the study uses
# (the training pipeline records these in run provenance).
EWT_FILES: dict[str, str] = {
    "train": "en_ewt-ud-train.conllu",
    "dev": "en_ewt-ud-dev.conllu",
    "test": "en_ewt-ud-test.conllu",
}
EWT_SHA256: dict[str, str] = {
    "en_ewt-ud-train.conllu": "3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b",
    "en_ewt-ud-dev.conllu": "531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6",
    "en_ewt-ud-test.conllu": "e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd",
}

LICENSE_FILE = "LICENSE.txt"
ATTRIBUTION_FILE = "ATTRIBUTION.txt"
ATTRIBUTION = f"""\
Universal Dependencies English Web Treebank (UD English-EWT), release {EWT_RELEASE}.
Source: https://github.com/UniversalDependencies/UD_English-EWT (tag {EWT_RELEASE})
License: CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/); see LICENSE.txt
in the source repository for the full terms and copyright notices.
When publishing results, cite the Universal Dependencies project and
Silveira et al. (2014), "A Gold Standard Dependency Corpus for English", LREC 2014.
"""

HOW_TO_PROVIDE = (
    "To provide the files without a network, either run\n"
    "    make data DATA_MIRROR=/path/to/folder\n"
    f"with a folder holding {', '.join(EWT_FILES.values())},\n"
    "or copy those three files into {dest}."
)

_CHUNK = 1 << 20
# How long to wait for the server to answer at all before giving up (seconds; capped by the
# caller's timeout). Kept short so a machine without network fails in seconds, not minutes.
CONNECT_TIMEOUT = 5.0


class DownloadError(RuntimeError):
    """The data could not be fetched or failed verification; the message says what to do."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_verified(
    dest: Path, name: str, source: BinaryIO, expected: str | None, origin: str
) -> None:
    """Stream ``source`` into ``dest/name`` via a temporary file, checking the SHA-256 first."""
    fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if expected is not None and actual != expected:
            raise DownloadError(
                f"checksum mismatch for {name} from {origin}:\n"
                f"    expected sha256 {expected}\n"
                f"    got      sha256 {actual}\n"
                f"{dest / name} was not written."
            )
        tmp.chmod(0o644)  # mkstemp makes the file private; data files are shareable
        os.replace(tmp, dest / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_from_mirror(mirror: Path, dest: Path, name: str, expected: str | None) -> None:
    source = mirror / name
    if not source.is_file():
        raise DownloadError(f"the mirror folder {mirror} has no {name}")
    with open(source, "rb") as fh:
        _write_verified(dest, name, fh, expected, origin=str(source))


def _check_reachable(url: str, timeout: float) -> None:
    """Raise OSError unless a TCP connection to ``url``'s server opens within ``timeout`` s.

    urlopen's timeout does not cover the DNS lookup, which can stall for many seconds on a
    machine without network, so the lookup and connect run in a daemon thread we stop
    waiting for. Skipped behind a proxy, where only the proxy must be reachable.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in urllib.request.getproxies() or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    outcome: list[OSError | None] = []

    def connect() -> None:
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(err)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise TimeoutError(f"no answer from {parts.hostname} within {timeout:g} s")
    if outcome[0] is not None:
        raise outcome[0]


def _download(url: str, dest: Path, name: str, expected: str, timeout: float) -> None:
    try:
        _check_reachable(url, min(timeout, CONNECT_TIMEOUT))
        # From here the timeout bounds each socket operation, so a stalled transfer ends too.
        with urllib.request.urlopen(url, timeout=timeout) as response:
            _write_verified(dest, name, response, expected, origin=url)
    except DownloadError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        if isinstance(err, urllib.error.HTTPError):
            reason = f"HTTP {err.code} {err.reason}"
        else:
            reason = getattr(err, "reason", err)
        raise DownloadError(
            f"could not download {name} from {url}: {reason}\n" + HOW_TO_PROVIDE.format(dest=dest)
        ) from None


def fetch_ewt(
    dest: str | os.PathLike,
    mirror: str | os.PathLike | None = None,
    timeout: float = 30.0,
    *,
    base_url: str | None = None,
) -> list[Path]:
    """Put the verified EWT train/dev/test files in ``dest`` and return their paths.

    Files already in ``dest`` with the right checksum are kept (nothing is written then, so a
    complete read-only folder passes). With ``mirror`` the files
    are copied from that folder (and its LICENSE.txt too, if it has one); otherwise they
    are downloaded from ``base_url`` (default :data:`BASE_URL`). Without a license file
    from the mirror, a short attribution note (ATTRIBUTION.txt) is written next to them.
    Raises :class:`DownloadError` on any failure, after the first file that fails.
    """
    dest = Path(dest)
    mirror = Path(mirror) if mirror is not None else None
    base_url = base_url if base_url is not None else BASE_URL
    if mirror is not None and not mirror.is_dir():
        raise DownloadError(f"the mirror folder {mirror} does not exist")
    dest.mkdir(parents=True, exist_ok=True)

    paths = []
    for name in EWT_FILES.values():
        target, expected = dest / name, EWT_SHA256[name]
        paths.append(target)
        if target.is_file():
            actual = sha256_file(target)
            if actual == expected:
                log.info("%s: already present, checksum OK", name)
                continue
            # Left in place until a verified copy replaces it (os.replace is atomic).
            log.warning("%s: present but sha256 %s != %s, fetching again", name, actual, expected)
        if mirror is not None:
            _copy_from_mirror(mirror, dest, name, expected)
            log.info("%s: copied from %s, checksum OK", name, mirror)
        else:
            url = base_url.rstrip("/") + "/" + name
            _download(url, dest, name, expected, timeout)
            log.info("%s: downloaded from %s, checksum OK", name, url)

    # The license travels with the data: the mirror's LICENSE.txt, or else a short note.
    if mirror is not None and (mirror / LICENSE_FILE).is_file():
        _copy_from_mirror(mirror, dest, LICENSE_FILE, expected=None)
    elif not (dest / LICENSE_FILE).is_file() and not (dest / ATTRIBUTION_FILE).is_file():
        note = io.BytesIO(ATTRIBUTION.encode())
        _write_verified(dest, ATTRIBUTION_FILE, note, None, origin="built-in")
    return paths


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 on success, 1 on any failure)."""
    parser = argparse.ArgumentParser(
        prog="python -m sm3repro.data.download",
        description=f"Fetch and verify UD English-EWT {EWT_RELEASE} (train/dev/test).",
    )
    parser.add_argument("--dest", type=Path, default=Path("data/ud-english-ewt"))
    parser.add_argument(
        "--mirror",
        type=Path,
        default=None,
        help="folder holding the three .conllu files (default: $DATA_MIRROR if set)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="network timeout, seconds")
    parser.add_argument(
        "--base-url", default=BASE_URL, help="where the release files live (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    mirror = args.mirror
    if mirror is None and os.environ.get("DATA_MIRROR"):
        mirror = Path(os.environ["DATA_MIRROR"])

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        paths = fetch_ewt(args.dest, mirror, args.timeout, base_url=args.base_url)
    except (DownloadError, OSError) as err:  # OSError: e.g. an unwritable destination
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"UD English-EWT {EWT_RELEASE} ready in {args.dest}: {len(paths)} files verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
