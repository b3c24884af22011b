"""Resource metering around the training loop: wall time, CPU%, RSS.

CPU% here is process CPU time (user + system, all threads, children excluded) divided by
wall time and by the number of usable cores, times 100: a 0-100 scale where one busy thread
on a 2-core box reads 50%. That is what W&B reports as "cpu" and the scale of the study's
38-58% figures. psutil's raw `Process.cpu_percent` sums threads (can exceed 100) and the
system-wide figure counts other processes, so we record that one only as context.

Contention: a timed run is only as good as a quiet machine. While the loop runs the meter also
reads the system-wide CPU times of the usable cores (/proc/stat via psutil): busy time that is not
ours was taken by other processes, and *steal* time by other tenants of the hypervisor (on a
virtual machine those never show in the process table). Both are recorded as a share of the
usable cores' capacity, and a run is flagged ``contended`` when either passes a threshold.
Shared caches and memory bandwidth leave no trace here: quiet-looking runs still vary.

Peak RSS: the kernel keeps a per-process high-water mark (VmHWM) that includes everything
before the loop (importing torch alone is ~220 MB) and earlier runs in the same process.
Writing "5" to /proc/self/clear_refs resets it, so start() does that; it is process-wide,
so nested meters would reset each other's peak.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
import threading
import time
from typing import Any

import psutil

MB = 1024 * 1024
# A run is contended when other processes took >= 10% of the usable cores' time during its
# training loop, or the hypervisor stole >= 5% (psutil's `steal`, Linux guests only).
CONTENDED_OTHERS_PERCENT = 10.0
CONTENDED_STEAL_PERCENT = 5.0


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity), not the machine's core count."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def reset_peak_rss() -> bool:
    """Reset the process RSS high-water mark to the current RSS; False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:  # not Linux, or no permission (some containers)
        return False


def proc_status_bytes(field: str) -> int | None:
    """A ``/proc/self/status`` memory field (VmHWM, VmPeak, VmData, ...) in bytes; None where
    there is no such file (not Linux) or field."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """Process RSS high-water mark: VmHWM (resettable), else ru_maxrss (process lifetime)."""
    hwm = proc_status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # macOS reports bytes


def current_rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def _process_cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system  # children excluded: they are not our training loop


def system_busy_and_steal_s(cores: list[int] | None = None) -> tuple[float, float]:
    """Busy and steal CPU seconds since boot, summed over ``cores`` (default: usable cores).

    Busy counts user, nice, system, irq and softirq time (guest time is already inside user).
    """
    per_cpu = psutil.cpu_times(percpu=True)
    if cores is None:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    chosen = [per_cpu[i] for i in cores if i < len(per_cpu)] if cores else per_cpu
    busy = sum(
        t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
        for t in chosen
    )
    return busy, sum(getattr(t, "steal", 0.0) for t in chosen)


def contention(wall_s: float, own_cpu_s: float, busy_s: float, steal_s: float, cores: int) -> dict:
    """Other processes' and the hypervisor's share of the usable cores over ``wall_s``."""
    capacity = wall_s * cores
    if capacity <= 0:
        return {"others_cpu_percent": None, "steal_percent": None, "contended": None}
    others = round(100.0 * max(0.0, busy_s - own_cpu_s) / capacity, 2)
    steal = round(100.0 * max(0.0, steal_s) / capacity, 2)
    return {
        "others_cpu_percent": others,
        "steal_percent": steal,
        "contended": others >= CONTENDED_OTHERS_PERCENT or steal >= CONTENDED_STEAL_PERCENT,
    }


class ResourceMeter:
    """Meter wall time, CPU% and RSS of the training loop, per epoch and in total.

    Usage::

        meter = ResourceMeter()
        meter.start()
        for epoch in ...:
            train()
            per_epoch = meter.mark_epoch()
            meter.pause(); evaluate(); meter.resume()  # optional: exclude evaluation
        totals = meter.stop()

    or ``with ResourceMeter() as meter: ...`` followed by ``meter.totals``.
    A daemon thread samples CPU% and RSS every `interval` seconds for peaks and means.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.cores = usable_cores()
        self._core_ids = (
            sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        )
        self.totals: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: psutil.Process | None = None

    # -- active time: wall, CPU, system-busy and steal seconds, excluding paused stretches --
    def _now(self) -> tuple[float, float, float, float]:
        assert self._proc is not None
        busy, steal = system_busy_and_steal_s(self._core_ids)
        return time.perf_counter(), _process_cpu_s(self._proc), busy, steal

    def _active_locked(self) -> tuple[float, float, float, float]:
        acc = self._acc
        if self._seg_start is not None:  # running: add the open segment
            now = self._now()
            acc = tuple(a + n - s for a, n, s in zip(acc, now, self._seg_start, strict=True))
        return acc  # type: ignore[return-value]

    # -- sampling -------------------------------------------------------------------------
    def _sample_locked(self) -> None:
        """Record one CPU%/RSS sample covering the time since the previous one."""
        now = self._now()
        system = psutil.cpu_percent(None)  # system-wide, since the previous call
        prev, self._prev = self._prev, now
        if self._seg_start is None or prev is None:
            return  # paused, or the interval straddles a pause: not a training sample
        dwall = now[0] - prev[0]
        if dwall <= 1e-3:
            return
        cpu_pct = 100.0 * (now[1] - prev[1]) / dwall / self.cores
        rss = self._proc.memory_info().rss if self._proc is not None else 0
        self._epoch_samples.append((cpu_pct, system, rss))
        self._n_samples += 1
        self._cpu_peak = max(self._cpu_peak, cpu_pct)
        self._system_sum += system
        self._rss_sampled_peak = max(self._rss_sampled_peak, rss)

    def _run_sampler(self) -> None:
        # Never let the sampler crash or hang the process: swallow everything.
        while not self._stop_event.wait(self.interval):
            try:
                with self._lock:
                    self._sample_locked()
            except Exception:
                pass

    # -- public API -----------------------------------------------------------------------
    def start(self) -> ResourceMeter:
        self._proc = psutil.Process()
        self._reset_ok = reset_peak_rss()
        self._acc = (0.0, 0.0, 0.0, 0.0)  # active (wall, cpu, system busy, steal) seconds
        self._paused_s = 0.0
        self._seg_start: tuple[float, float, float, float] | None = self._now()
        self._prev: tuple[float, ...] | None = self._seg_start
        self._pause_wall: float | None = None
        self._mark = self._acc  # active totals at the last epoch mark
        self._epoch_samples: list[tuple[float, float, int]] = []
        self._n_samples, self._cpu_peak, self._system_sum = 0, 0.0, 0.0
        self._rss_sampled_peak = current_rss_bytes()
        psutil.cpu_percent(None)  # prime: the first call has no interval to report on
        self.totals = None
        self._stop_event.clear()
        self._thread = threading.Thread(target=self._run_sampler, name="ResourceMeter", daemon=True)
        self._thread.start()
        return self

    def _check_started(self) -> None:
        if self._proc is None or self._thread is None:
            raise RuntimeError("ResourceMeter.start() has not been called")

    def pause(self) -> None:
        """Stop counting wall and CPU time (e.g. around dev evaluation)."""
        self._check_started()
        with self._lock:
            if self._seg_start is None:
                return
            self._sample_locked()  # close the running interval before pausing
            self._acc = self._active_locked()
            self._seg_start = None
            self._pause_wall = time.perf_counter()

    def resume(self) -> None:
        self._check_started()
        with self._lock:
            if self._seg_start is not None:
                return
            self._seg_start = self._now()
            self._prev = self._seg_start  # the next sample starts here, not before the pause
            if self._pause_wall is not None:
                self._paused_s += self._seg_start[0] - self._pause_wall
            self._pause_wall = None

    def mark_epoch(self) -> dict[str, Any]:
        """Close the current epoch: its wall time, CPU%, CPU% peak, system CPU% and RSS."""
        self._check_started()
        with self._lock:
            if self._seg_start is not None:
                self._sample_locked()  # so the epoch's tail is counted in this epoch
            active = self._active_locked()
            d_wall, d_cpu, d_busy, d_steal = (
                a - m for a, m in zip(active, self._mark, strict=True)
            )
            self._mark = active
            samples, self._epoch_samples = self._epoch_samples, []
        return {
            **contention(d_wall, d_cpu, d_busy, d_steal, self.cores),
            "wall_s": round(d_wall, 4),
            "cpu_s": round(d_cpu, 4),
            "cpu_percent": round(100.0 * d_cpu / d_wall / self.cores, 2) if d_wall > 0 else None,
            "cpu_percent_peak": round(max(s[0] for s in samples), 2) if samples else None,
            "system_cpu_percent": (
                round(sum(s[1] for s in samples) / len(samples), 2) if samples else None
            ),
            "rss_mb": round(current_rss_bytes() / MB, 1),
            "rss_mb_peak": round(max(s[2] for s in samples) / MB, 1) if samples else None,
        }

    def peek(self) -> dict[str, Any]:
        """Totals so far without stopping: runtime_s, cpu_s, cpu_percent (e.g. for checkpoints)."""
        self._check_started()
        with self._lock:
            wall, cpu, busy, steal = self._active_locked()
        return {
            "runtime_s": wall,
            "cpu_s": cpu,
            "system_busy_s": busy,
            "steal_s": steal,
            "cpu_percent": 100.0 * cpu / wall / self.cores if wall > 0 else None,
        }

    def stop(self) -> dict[str, Any]:
        """Stop the sampler (returns within about a second) and return the totals."""
        self._check_started()
        if self.totals is not None:
            return self.totals
        self._stop_event.set()
        with self._lock:
            if self._seg_start is not None:
                self._sample_locked()
            wall, cpu, busy, steal = self._active_locked()
            if self._pause_wall is not None:
                self._paused_s += time.perf_counter() - self._pause_wall
            n, peak, system_sum = self._n_samples, self._cpu_peak, self._system_sum
            rss_sampled_peak = self._rss_sampled_peak
        assert self._thread is not None
        self._thread.join(timeout=1.0)  # a daemon: even if it lingers it cannot block exit
        self.totals = {
            "runtime_s": round(wall, 4),
            "runtime_min": round(wall / 60, 6),
            "cpu_s": round(cpu, 4),
            "cpu_percent": round(100.0 * cpu / wall / self.cores, 2) if wall > 0 else None,
            "cpu_percent_peak": round(peak, 2) if n else None,
            "system_busy_s": round(busy, 4),
            "steal_s": round(steal, 4),
            **contention(wall, cpu, busy, steal, self.cores),
            "system_cpu_percent_mean": round(system_sum / n, 2) if n else None,
            "peak_rss_mb": round(peak_rss_bytes() / MB, 1),
            # True: the reset failed, so the peak covers the whole process (imports, earlier runs).
            "peak_rss_is_process_lifetime": not self._reset_ok,
            "sampled_rss_peak_mb": round(rss_sampled_peak / MB, 1),
            "paused_s": round(self._paused_s, 4),
            "usable_cores": self.cores,
            "samples": n,
        }
        return self.totals

    def __enter__(self) -> ResourceMeter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tune_malloc() -> None:
    """Keep glibc from returning the embedding gradient to the OS after every step (it was
    page-faulted back each time: ~70% slower steps at batch 64)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass
