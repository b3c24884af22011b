"""Fault injection for the training harness, shared by tests/run/test_faults.py and
scripts/fault_suite.py.

Every case injects a real fault into real ``python -m sm3repro.train`` processes (signals,
two concurrent sweeps, a read-only or full mount, malformed files, a refused or silent W&B
server) and returns an ``Outcome``: what was expected, what was observed, the problems found,
and how many finished records that existed before the fault were lost or changed by it.

The yardstick is a *reference sweep*, run once without faults: after a fault and a rerun, the
records must equal it (same run ids, same metrics; timings excluded).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sm3repro.data.download import EWT_FILES
from sm3repro.record.folder import RunDir
from sm3repro.record.schema import FINISHED, Status

# Tiny, single-threaded runs: the box has two shared cores. Two epochs, so that a checkpoint
# exists between them; logging to W&B only where a case is about W&B.
TRAIN = [
    "data.max_train_sentences=200",
    "data.max_eval_sentences=100",
    "epochs=2",
    "torch_threads=1",
    "log_every=5",
    "logger=none",
]
GRID = ["optimizer=sgd,sm3_ii"]  # the reference sweep: two runs
SWEEP = ["-m", *GRID, *TRAIN]
EPOCH_LINE = re.compile(r"run (\S+) epoch (\d+)/(\d+):")
# differ between equal runs: timings, and the per-step phase and training-second figures
TIMING_KEYS = ("time", "cpu", "rss", "per_s", "steal", "contended", "phases", "train_s")
# rows that are measurements of the host, one pair per sitting (a resumed run has more)
HOST_ROWS = ("calibration",)


# -- outcomes --------------------------------------------------------------------------------
@dataclass
class Outcome:
    """One fault tried: the table row of the fault suite, and what a test asserts on."""

    fault: str
    expected: str
    observed: str = ""
    problems: list[str] = field(default_factory=list)
    lost: int = 0  # finished records present before the fault, missing or changed after it
    details: list[str] = field(default_factory=list)  # process output, shown on failure

    @property
    def handled(self) -> bool:
        return not self.problems and self.lost == 0

    def check(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
        return ok

    def explain(self) -> str:
        lines = [f"{self.fault}: expected {self.expected}", f"observed: {self.observed}"]
        lines += [f"problem: {p}" for p in self.problems]
        if self.lost:
            lines.append(f"records lost: {self.lost}")
        return "\n".join(lines + self.details)


def assert_handled(*outcomes: Outcome) -> None:
    """Fail unless there is at least one outcome and every one was handled. No outcome means
    no fault was tried (a case that returned nothing, an empty selection): that must not pass."""
    if not outcomes:
        raise AssertionError("no outcome: the case tried no fault")
    strays = [o for o in outcomes if not isinstance(o, Outcome)]
    if strays:
        raise AssertionError(f"not outcomes: {strays!r} (a case must return Outcome objects)")
    failed = [o for o in outcomes if not o.handled]
    if failed:
        raise AssertionError("\n\n".join(o.explain() for o in failed))


def case_outcomes(case: str, returned: object) -> list[Outcome]:
    """What a case returned, as table rows: when it gave no outcome (or something else among
    them), a failing row says so, so the suite cannot count a case that tried nothing."""
    items = list(returned) if isinstance(returned, list | tuple) else [returned]
    outcomes = [o for o in items if isinstance(o, Outcome)]
    if outcomes and len(outcomes) == len(items):
        return outcomes
    out = Outcome(case, "one outcome per fault tried", observed=f"returned {returned!r}")
    out.problems.append(
        "the case produced no outcome" if not outcomes else "it returned more than outcomes"
    )
    return [*outcomes, out]


# -- choosing cases by name ------------------------------------------------------------------
T = TypeVar("T")


class UnknownCase(LookupError):
    """A case chosen by a name no case has (renamed or removed)."""


def select(
    cases: Iterable[T], names: Iterable[str], name: Callable[[T], str], what: str
) -> list[T]:
    """The cases with these names, in the order named. A name that matches no case raises:
    a renamed case must not drop out of a selection silently, leaving it to pass untried."""
    by_name = {name(case): case for case in cases}
    names = list(names)
    missing = [n for n in names if n not in by_name]
    if missing:
        raise UnknownCase(
            f"no {what} named {', '.join(map(repr, missing))}; "
            f"the {what}s are {', '.join(map(repr, by_name))}"
        )
    return [by_name[n] for n in names]


# -- processes -------------------------------------------------------------------------------
@dataclass
class Proc:
    """A finished harness process."""

    rc: int
    stdout: str
    stderr: str
    wall_s: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("sm3repro: error:")]

    def trained(self) -> dict[str, int]:
        """run id -> how many epochs this process trained of it (from the epoch log lines)."""
        counts: dict[str, int] = {}
        for match in EPOCH_LINE.finditer(self.output):
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
        return counts

    def tail(self, label: str = "output", n: int = 25) -> str:
        lines = self.output.splitlines()[-n:]
        return f"--- {label} (exit {self.rc}, {self.wall_s:.1f} s) ---\n" + "\n".join(lines)


def _default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


class Live:
    """A harness process started in its own session, its output collected as it arrives,
    so that a case can wait for a moment in the run and then signal it."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], **popen) -> None:
        self.started = time.monotonic()
        extra = popen.pop("preexec_fn", None)  # a case's own (e.g. a file-size limit)

        def preexec() -> None:
            # A shell's background jobs (nohup ... &) inherit SIGINT ignored, and Python then
            # never turns it into KeyboardInterrupt: give the harness a terminal's defaults.
            _default_signals()
            if extra is not None:
                extra()

        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=preexec,
            **popen,
        )
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _drain(stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    def text(self) -> str:
        return "".join(self._out) + "".join(self._err)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 120) -> bool:
        """Poll ``condition`` until it holds (True) or the process ends or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            if self.proc.poll() is not None:
                return condition()
            time.sleep(0.01)
        return False

    def send(self, sig: int, group: bool = False) -> None:
        """Signal the process, or its whole group as a terminal's Ctrl-C does."""
        if self.proc.poll() is None:
            (os.killpg if group else os.kill)(self.proc.pid, sig)

    def finish(self, timeout: float = 300) -> Proc:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=10)
        wall = time.monotonic() - self.started
        return Proc(self.proc.returncode, "".join(self._out), "".join(self._err), wall)


# -- the shared bench and one case's lab ----------------------------------------------------
def make_mini_ewt(source: Path, dest: Path, n_train: int = 200, n_eval: int = 100) -> Path:
    """The first sentences of each EWT split, byte for byte: the same data the TRAIN limits
    select from the full files, read in milliseconds instead of seconds."""
    dest.mkdir(parents=True, exist_ok=True)
    for split, name in EWT_FILES.items():
        blocks = [b for b in (source / name).read_text(encoding="utf-8").split("\n\n") if b.strip()]
        keep = blocks[: n_train if split == "train" else n_eval]
        (dest / name).write_text("\n\n".join(keep) + "\n\n", encoding="utf-8")
    return dest


@dataclass
class Bench:
    """What every case shares: the EWT mirror, a small copy of it, and the reference sweep."""

    full_data: Path
    data: Path
    reference: Path  # results folder of the uninterrupted sweep
    cache: Path  # its feature cache
    sweep_s: float = 0.0  # how long the reference sweep took, start-up included

    @classmethod
    def build(cls, root: Path, full_data: Path) -> Bench:
        bench = cls(
            full_data, make_mini_ewt(full_data, root / "data"), root / "results", root / "cache"
        )
        lab = Lab(bench, root)
        proc = lab.run(*SWEEP, results=bench.reference)
        bench.sweep_s = proc.wall_s
        records = finished_records(bench.reference)
        if proc.rc != 0 or len(records) != 2:
            raise RuntimeError("the reference sweep failed:\n" + proc.tail())
        return bench


@dataclass
class Lab:
    """One case's scratch folder: processes run there, with results and cache inside it."""

    bench: Bench
    root: Path

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def env(self, results: Path | None = None, data: Path | None = None, **extra: str) -> dict:
        env = dict(os.environ)
        env.update(
            SM3REPRO_DATA=str(data or self.bench.data),
            SM3REPRO_RESULTS=str(results or self.results),
            SM3REPRO_CACHE=str(self.cache),
            WANDB_MODE="offline",
            WANDB_SILENT="true",
            WANDB_DIR=str(self.root),
            WANDB_CACHE_DIR=str(self.root / "wandb-cache"),
            WANDB_CONFIG_DIR=str(self.root / "wandb-config"),
            WANDB_DATA_DIR=str(self.root / "wandb-data"),
            PYTHONUNBUFFERED="1",
        )
        env.pop("SM3REPRO_FAULT", None)
        env.update(extra)
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "sm3repro.train", *args]

    def start(
        self,
        *args: str,
        results: Path | None = None,
        data: Path | None = None,
        env: dict | None = None,
        **popen,
    ) -> Live:
        return Live(
            self.argv(*args), self.root, {**self.env(results, data), **(env or {})}, **popen
        )

    def run(self, *args: str, timeout: float = 300, **kwargs) -> Proc:
        return self.start(*args, **kwargs).finish(timeout)

    def seed_results(self, dest: Path | None = None) -> Path:
        """A results folder that already holds the reference sweep's finished records."""
        dest = dest or self.results
        shutil.copytree(self.bench.reference, dest, dirs_exist_ok=True)
        return dest


def run_parallel(jobs: Sequence[Callable[[], Live]], width: int = 2) -> list[Proc]:
    """Start ``width`` processes at a time (the box has two cores); results in job order."""
    results: list[Proc | None] = [None] * len(jobs)
    running: list[tuple[int, Live]] = []
    queue = list(enumerate(jobs))
    while queue or running:
        while queue and len(running) < width:
            index, job = queue.pop(0)
            running.append((index, job()))
        index, live = running.pop(0)
        results[index] = live.finish()
    return results  # type: ignore[return-value]


# -- records ---------------------------------------------------------------------------------
def _strip_timing(row: dict) -> dict:
    return {k: v for k, v in row.items() if not any(t in k for t in TIMING_KEYS)}


def fingerprint(results: Path, run_id: str) -> str | None:
    """What an equal run must reproduce (status, scores, every metrics row without timings),
    or None when the record is not finished or does not pass its integrity check."""
    record = RunDir(results, run_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = record.finished_summary()
    if summary is None:
        return None
    rows = [json.loads(line) for line in record.metrics_path.read_text().splitlines()]
    core = {
        k: summary.get(k) for k in ("status", "reason", "epochs_completed", "final", "best_dev")
    }
    return json.dumps(
        {
            "summary": core,
            "metrics": [_strip_timing(r) for r in rows if r.get("kind") not in HOST_ROWS],
        },
        sort_keys=True,
    )


def finished_records(results: Path) -> dict[str, str]:
    """run id -> fingerprint of every finished, intact record under ``results``."""
    runs = sorted(p.name for p in (results / "runs").glob("*") if p.is_dir())
    prints = {run_id: fingerprint(results, run_id) for run_id in runs}
    return {run_id: fp for run_id, fp in prints.items() if fp is not None}


def records_lost(before: dict[str, str], after: dict[str, str]) -> int:
    return sum(1 for run_id, fp in before.items() if after.get(run_id) != fp)


def summaries_parse(results: Path) -> list[str]:
    """Problems with any summary.json on disk (a half-written one would show up here)."""
    problems = []
    for path in (results / "runs").glob("*/summary.json"):
        try:
            status = json.loads(path.read_text()).get("status")
        except (ValueError, AttributeError) as err:
            status = f"unreadable ({err})"
        if status not in (*FINISHED, Status.RUNNING):
            problems.append(f"{path.parent.name}/summary.json is damaged: status {status}")
    return problems


def temporaries(results: Path) -> list[Path]:
    return sorted((results / "runs").glob("*/.*.tmp"))


def match_reference(
    out: Outcome, lab: Lab, results: Path | None = None, ids: Sequence[str] | None = None
) -> int:
    """Check that ``results`` holds the reference sweep's records (all, or those in ``ids``),
    equal in everything but timings; returns how many matched."""
    reference = finished_records(lab.bench.reference)
    got = finished_records(results or lab.results)
    wanted = {k: v for k, v in reference.items() if ids is None or k in ids}
    missing = sorted(set(wanted) - set(got))
    differ = sorted(k for k in wanted if k in got and got[k] != wanted[k])
    out.check(not missing, f"records missing or unfinished: {missing}")
    out.check(not differ, f"records differ from the uninterrupted sweep's: {differ}")
    return len(wanted) - len(missing) - len(differ)


def reference_id(lab: Lab, optimizer: str) -> str:
    """The run id of the reference sweep's run with this optimizer."""
    return next(r for r in finished_records(lab.bench.reference) if r.startswith(f"{optimizer}-"))


def with_overrides(base: Sequence[str], *overrides: str) -> list[str]:
    """``base`` with the keys in ``overrides`` replaced (Hydra rejects a key given twice)."""
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    return [a for a in base if a.split("=", 1)[0] not in keys] + list(overrides)


def short(text: str, root: Path, limit: int = 110) -> str:
    """One line for the table: the lab folder abbreviated, long text cut."""
    text = text.replace(str(root), "…").replace("sm3repro: error: ", "").replace("|", "/")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- storage faults --------------------------------------------------------------------------
def _sh(*cmd: str) -> bool:
    return subprocess.run(cmd, capture_output=True).returncode == 0


def _writable(folder: Path) -> bool:
    probe = folder / ".fault-probe"
    try:
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
        return True
    except OSError:
        return False


@contextmanager
def read_only_folder(path: Path, seed: Callable[[Path], object]) -> Iterator[str]:
    """Make ``path`` (filled by ``seed``) unwritable even for root, which ignores mode bits:
    a tmpfs remounted read-only, else the immutable attribute (``chattr -R +i``). Yields the
    mechanism used; raises when none works, since a test must not silently pass or skip."""
    path.mkdir(parents=True, exist_ok=True)
    if _sh("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(path)):
        try:
            seed(path)
            if _sh("mount", "-o", "remount,ro", str(path)) and not _writable(path):
                yield "read-only tmpfs mount"
                return
        finally:
            _sh("umount", str(path)) or _sh("umount", "-l", str(path))
    seed(path)
    if _sh("chattr", "-R", "+i", str(path)):
        try:
            if not _writable(path):
                yield "chattr +i (immutable)"
                return
        finally:
            _sh("chattr", "-R", "-i", str(path))
    raise RuntimeError(f"cannot make {path} read-only here (tried a tmpfs mount and chattr +i)")


class FullFolder:
    """``path`` with only ``free`` bytes left, filled by ``seed`` first: a small tmpfs topped
    up with a filler file; where mounting is not allowed, RLIMIT_FSIZE in the child caps every
    file it writes at ``free`` bytes (EFBIG rather than ENOSPC, the same failing write)."""

    def __init__(self, path: Path, free: int, seed: Callable[[Path], object]) -> None:
        self.path, self.free = path, free
        path.mkdir(parents=True, exist_ok=True)
        self.mounted = _sh("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path))
        seed(path)
        if self.mounted:
            self.mechanism = "tmpfs mount, filled up"
            self._fill()
        else:
            self.mechanism = "RLIMIT_FSIZE in the child"

    def _fill(self) -> None:
        stat = os.statvfs(self.path)
        excess = stat.f_bavail * stat.f_frsize - self.free
        chunk = b"\0" * (1 << 16)
        with open(self.path / "filler", "wb") as fh:
            try:
                while excess > 0:
                    excess -= fh.write(chunk[: min(len(chunk), excess)])
                    fh.flush()
            except OSError:  # ENOSPC: exactly full, which is what free=0 asks for
                pass

    def preexec(self) -> Callable[[], None] | None:
        """For the child's Popen: the file-size cap, when there is no mount to fill."""
        if self.mounted:
            return None
        import resource

        limit = max(self.free, 1)
        return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    def grow(self) -> None:
        """Free space again (the user cleaned up the disk)."""
        if self.mounted:
            (self.path / "filler").unlink(missing_ok=True)
        else:
            self.free = 1 << 40

    def close(self) -> None:
        if self.mounted:
            _sh("umount", str(self.path)) or _sh("umount", "-l", str(self.path))


# -- a network endpoint that records every connection -------------------------------------
class Listener:
    """A TCP server on 127.0.0.1 that counts the connections it gets and never answers
    (so a client that does connect waits, as behind a dead proxy)."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.port = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._held:
            conn.close()
        self._server.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
