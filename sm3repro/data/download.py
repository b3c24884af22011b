"""Fetch UD English-EWT r2.16 (the study's data, ``make data``) and verify its checksums.

The three ``.conllu`` files come from a local mirror folder when one is given (``--mirror``
or, for the CLI, the ``DATA_MIRROR`` environment variable), otherwise from GitHub. pooch
writes every file through a temporary file in the destination folder and moves it into place
only once its SHA-256 matches the pinned sum, so the destination never holds a partial or
wrong file under its final name. What pooch lacks is kept here: the mirror folder (a pooch
downloader that copies), a fast failure without network (a bounded connect before the
transfer, since requests' timeout does not bound the DNS lookup) and an error that says how
to provide the files offline.

    python -m sm3repro.data.download --dest data/ud-english-ewt [--mirror DIR] [--timeout S]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pooch
import requests

from sm3repro.io import atomic_write_bytes, sha256_file

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

# How long to wait for the server to answer at all before giving up (seconds; capped by the
# caller's timeout). Kept short so a machine without network fails in seconds, not minutes.
CONNECT_TIMEOUT = 5.0
RETRIES = 2  # a transfer that fails after the server answered is tried again (pooch waits 1 s, 2 s)


class DownloadError(RuntimeError):
    """The data could not be fetched or failed verification; the message says what to do."""


def _registry(dest: Path, base_url: str, retries: int) -> pooch.Pooch:
    """pooch fetches into a temporary file beside the target, checks the pinned SHA-256 and
    only then moves it into place, so ``dest`` never holds a partial or wrong file."""
    return pooch.create(
        path=dest,
        base_url=base_url.rstrip("/") + "/",
        registry={name: f"sha256:{digest}" for name, digest in EWT_SHA256.items()},
        retry_if_failed=retries,
    )


def _copy_from(mirror: Path) -> Callable[[str, str, pooch.Pooch], None]:
    """A pooch downloader that copies the file of the same name from a local folder."""

    def copy(url: str, output_file: str, _pup: pooch.Pooch) -> None:
        source = mirror / url.rsplit("/", 1)[-1]
        if not source.is_file():
            raise DownloadError(f"the mirror folder {mirror} has no {source.name}")
        shutil.copyfile(source, output_file)

    return copy


def _check_reachable(url: str, timeout: float) -> None:
    """Raise OSError unless a TCP connection to ``url``'s server opens within ``timeout`` s.

    requests' timeout does not cover the DNS lookup, which can stall for many seconds on a
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


def _fetch(files: pooch.Pooch, name: str, mirror: Path | None, timeout: float) -> None:
    """One verified file into place, from the mirror or the network; errors say what to do."""
    dest, url, expected = Path(files.abspath), files.get_url(name), EWT_SHA256[name]
    origin = str(mirror / name) if mirror is not None else url
    try:
        if mirror is not None:
            files.fetch(name, downloader=_copy_from(mirror))
        else:
            _check_reachable(url, min(timeout, CONNECT_TIMEOUT))
            # From here the timeout bounds each socket operation, so a stalled transfer ends too.
            files.fetch(name, downloader=pooch.HTTPDownloader(timeout=timeout, progressbar=False))
    except ValueError as err:  # pooch: the SHA-256 does not match the pin
        actual = sha256_file(origin) if mirror is not None else str(err)
        raise DownloadError(
            f"checksum mismatch for {name} from {origin}:\n"
            f"    expected sha256 {expected}\n"
            f"    got      sha256 {actual}\n"
            f"{dest / name} was not written."
        ) from None
    except (requests.RequestException, OSError) as err:
        if isinstance(err, requests.HTTPError) and err.response is not None:
            reason = f"HTTP {err.response.status_code} {err.response.reason}"
        else:
            reason = err
        raise DownloadError(
            f"could not download {name} from {url}: {reason}\n" + HOW_TO_PROVIDE.format(dest=dest)
        ) from None
    (dest / name).chmod(0o644)  # pooch's temporary file is private; data files are shareable


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
    if mirror is not None:  # a local copy: retrying a copy that failed would fail the same way
        files = _registry(dest, mirror.resolve().as_uri(), retries=0)
    else:
        files = _registry(dest, base_url, retries=RETRIES)

    paths = []
    for name in EWT_FILES.values():
        target, expected = dest / name, EWT_SHA256[name]
        paths.append(target)
        if target.is_file():
            actual = sha256_file(target)
            if actual == expected:
                log.info("%s: already present, checksum OK", name)
                continue
            # Left in place until a verified copy replaces it (a rename, atomic).
            log.warning("%s: present but sha256 %s != %s, fetching again", name, actual, expected)
        _fetch(files, name, mirror, timeout)
        log.info("%s: from %s, checksum OK", name, files.get_url(name))

    # The license travels with the data: the mirror's LICENSE.txt, or else a short note.
    if mirror is not None and (mirror / LICENSE_FILE).is_file():
        license_text = (mirror / LICENSE_FILE).read_bytes()
        target = dest / LICENSE_FILE
        if not target.is_file() or target.read_bytes() != license_text:  # a ready folder: no writes
            atomic_write_bytes(target, license_text)
    elif not (dest / LICENSE_FILE).is_file() and not (dest / ATTRIBUTION_FILE).is_file():
        atomic_write_bytes(dest / ATTRIBUTION_FILE, ATTRIBUTION.encode())
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
