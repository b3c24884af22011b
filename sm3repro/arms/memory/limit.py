"""A hard memory limit for one child process: a memory cgroup of its own.

Why a cgroup and not an rlimit: ``RLIMIT_AS`` (and ``RLIMIT_DATA``) cap *virtual* memory, and a
torch process reserves far more address space than it ever touches (thread arenas, stacks,
allocator reservations): the arm records VmPeak next to VmHWM for every cell, and the gap is
hundreds of MB to GB, varying with the model, so an address-space cap fails runs that fit and
its threshold says nothing about resident memory. A cgroup's limit is the kernel's count of the
pages the process actually holds (anonymous memory, plus page cache it can reclaim first): the
quantity a memory budget means. Over it, the kernel's OOM killer ends the process (SIGKILL), and
the cgroup's own counters say so, which is how a failure is told apart from a crash.

The child's cgroup is created *inside the caller's own* (from /proc/self/cgroup), so whatever
limits the caller is under still apply and nothing outside its subtree is touched. Works with
cgroup v2 (``memory.max``) and v1 (``memory.limit_in_bytes``); needs write access to the
caller's cgroup (root here).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

GIB = 1024**3


class LimitUnavailable(RuntimeError):
    """No memory cgroup this process may create children in."""


@dataclass
class MemoryCgroup:
    path: Path
    version: int  # 1 or 2

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def set_limit(self, limit_bytes: int) -> None:
        if self.version == 2:
            (self.path / "memory.max").write_text(str(limit_bytes))
            with contextlib.suppress(OSError):  # absent without swap accounting
                (self.path / "memory.swap.max").write_text("0")
        else:
            (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            with contextlib.suppress(OSError):  # memory+swap: no swapping out of the limit
                (self.path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer ended in this cgroup."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        with contextlib.suppress(OSError):
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def peak_bytes(self) -> int | None:
        """The cgroup's high-water mark of charged memory (RSS plus page cache)."""
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        with contextlib.suppress(OSError, ValueError):
            return int((self.path / name).read_text())
        return None

    def remove(self) -> None:
        for _ in range(50):  # the kernel may take a moment to release a killed process
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)


def _own_memory_cgroup() -> tuple[Path, int]:
    """The folder of this process's memory cgroup and the cgroup version."""
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    for line in lines:  # v1: "<id>:memory:/path"
        _, controllers, rel = line.split(":", 2)
        if "memory" in controllers.split(","):
            for m in mounts:
                if m[2] == "cgroup" and "memory" in m[3].split(","):
                    return Path(m[1]) / rel.lstrip("/"), 1
    for line in lines:  # v2: "0::/path", with the memory controller enabled there
        if line.startswith("0::"):
            for m in mounts:
                if m[2] == "cgroup2":
                    here = Path(m[1]) / line[3:].lstrip("/")
                    controllers = (here / "cgroup.controllers").read_text().split()
                    if "memory" in controllers:
                        return here, 2
    raise LimitUnavailable("no memory cgroup controller is mounted for this process")


@contextlib.contextmanager
def memory_cgroup(limit_bytes: int, name: str) -> Iterator[MemoryCgroup]:
    """A fresh child cgroup limited to ``limit_bytes``; removed on exit. Put a process in it by
    writing its pid to ``cgroup.procs`` (see :func:`join_preexec`)."""
    try:
        parent, version = _own_memory_cgroup()
        path = parent / f"{name}-{os.getpid()}"
        path.mkdir(exist_ok=True)
    except (OSError, ValueError) as error:
        raise LimitUnavailable(f"cannot create a memory cgroup: {error}") from None
    group = MemoryCgroup(path, version)
    try:
        try:
            group.set_limit(limit_bytes)
        except OSError as error:
            raise LimitUnavailable(f"cannot set a memory limit on {path}: {error}") from None
        yield group
    finally:
        group.remove()


def join_preexec(group: MemoryCgroup):
    """A ``subprocess`` ``preexec_fn`` that moves the child into ``group`` before it execs, so
    every byte of the new process is counted."""
    procs = str(group.procs)

    def join() -> None:
        with open(procs, "w") as fh:
            fh.write(str(os.getpid()))

    return join
