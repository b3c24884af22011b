"""What claims 3 and 4 rest on: runtime and CPU time cover training only, add up over a resume,
and CPU% is on the 0-100 scale of the usable cores."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import SMALL, harness_env, read_records
from inprocess import train_tiny

from sm3repro.run import resources, train
from sm3repro.run.resources import ResourceMeter

SPIN_S = 2.0  # CPU-busy seconds added to every dev evaluation


def spin(seconds: float) -> None:
    """Burn CPU (not sleep), so a leak shows in CPU time as well as in wall time."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def epoch_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "epoch"]


def rounding_error(cpu_s: float, wall_s: float, cores: int, unit: float) -> float:
    """How far CPU% recomputed from CPU and wall seconds rounded to ``unit`` can be from the
    recorded CPU% (itself rounded to 0.01): a few hundredths on a run of a fraction of a second."""
    half = unit / 2
    return 100 * (half / wall_s + cpu_s * half / wall_s**2) / cores + 0.005


def per_1k_rounding(examples: int) -> float:
    """How far the recorded CPU-s per 1k examples (rounded to 1e-4) can be from the value
    recomputed from the recorded CPU seconds (themselves rounded to 1e-4)."""
    half = 0.5e-4
    return half + 1000 * half / examples + 1e-12


def test_runtime_and_cpu_time_exclude_dev_evaluation(tmp_path, ewt_dir, monkeypatch) -> None:
    evaluate, dev_calls = train.evaluate, []

    def slow_dev_evaluation(model, data, split, cfg):
        if split is data.dev:
            dev_calls.append(1)
            spin(SPIN_S)
        return evaluate(model, data, split, cfg)

    monkeypatch.setattr(train, "evaluate", slow_dev_evaluation)
    # Two dev points per epoch: one inside it (timed out of the epoch), one at its end.
    summary = train_tiny(tmp_path, ewt_dir, "epochs=2", "batch_size=128", "dev_evals_per_epoch=2")
    assert len(dev_calls) == 4
    r = summary["resources"]
    rows = epoch_rows(Path(tmp_path / "results" / "runs" / summary["run_id"]))
    trained_s = sum(row["epoch_time_s"] for row in rows)
    # throughput and means from the epochs' own seconds (rounded to 1 ms in the rows)
    examples = summary["data"]["train_examples"]
    for row in rows:
        rel = 0.0005 / row["epoch_time_s"] + 1e-4  # the row's seconds are rounded to 1 ms
        assert row["examples_per_s"] == pytest.approx(examples / row["epoch_time_s"], rel=rel)
    assert r["epoch_time_s_mean"] == pytest.approx(trained_s / 2, abs=1e-3)
    rel = 0.001 / trained_s + 1e-4
    assert r["examples_per_s"] == pytest.approx(2 * examples / trained_s, rel=rel)
    assert r["runtime_min"] == round(r["runtime_s"] / 60, 3)  # from the recorded seconds
    assert r["cpu_s_per_1k_examples"] == pytest.approx(
        1000 * r["cpu_s"] / (2 * examples), abs=per_1k_rounding(2 * examples)
    )
    # counted, each evaluation would add SPIN_S of wall and CPU time to the run and its epoch
    assert r["runtime_s"] < trained_s + SPIN_S / 2, (r, trained_s)
    assert r["cpu_s"] < trained_s * r["usable_cores"] + SPIN_S / 2, (r, trained_s)
    assert r["paused_s"] >= 4 * SPIN_S  # the meter saw the evaluations and set them apart
    assert trained_s < r["runtime_s"] + SPIN_S / 2, (r, rows)  # nor the epochs' own seconds
    assert r["cpu_percent"] == pytest.approx(
        100 * r["cpu_s"] / r["runtime_s"] / r["usable_cores"],
        abs=rounding_error(r["cpu_s"], r["runtime_s"], r["usable_cores"], unit=0.01),
    )


def test_a_resumed_run_adds_up_its_segments(run_harness, tmp_path, ewt_dir) -> None:
    args = ["optimizer=sm3_ii", *SMALL, "epochs=2", "logger=none"]
    killed = run_harness(*args, env=harness_env(tmp_path, ewt_dir, SM3REPRO_FAULT="kill_after_epoch:1"),
                         check=False)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    run_harness(*args)
    reference_env = harness_env(tmp_path, ewt_dir, SM3REPRO_RESULTS=str(tmp_path / "reference"))
    run_harness(*args, env=reference_env)
    [(run_id, resumed)] = read_records(tmp_path / "results").items()
    reference = read_records(tmp_path / "reference")[run_id]
    assert resumed["resumed_from_epoch"] == 1

    rows = epoch_rows(tmp_path / "results" / "runs" / run_id)
    r = resumed["resources"]
    trained_s = sum(row["epoch_time_s"] for row in rows)  # epoch 1 ran in the killed process
    assert 0.8 * trained_s <= r["runtime_s"] <= trained_s + 1.0, (r, rows)
    # CPU seconds of both segments, from each epoch's CPU% and wall time
    cpu_s = sum(row["cpu_percent"] / 100 * r["usable_cores"] * row["epoch_time_s"] for row in rows)
    expected_percent = 100 * cpu_s / r["runtime_s"] / r["usable_cores"]
    assert r["cpu_percent"] == pytest.approx(expected_percent, rel=0.25), (r, rows)
    # and it is the whole run's CPU seconds over its runtime, as recorded
    cores = r["usable_cores"]
    assert r["cpu_percent"] == pytest.approx(
        100 * r["cpu_s"] / r["runtime_s"] / cores,
        abs=rounding_error(r["cpu_s"], r["runtime_s"], cores, unit=1e-3),
    )
    # CPU seconds and CPU-s per 1k examples cover both segments too, not only the last one
    assert r["cpu_s"] == pytest.approx(cpu_s, rel=0.25), (r, rows)
    examples = resumed["data"]["train_examples"] * len(rows)
    assert r["cpu_s_per_1k_examples"] == pytest.approx(
        1000 * r["cpu_s"] / examples, abs=per_1k_rounding(examples)
    )
    assert r["runtime_min"] == pytest.approx(r["runtime_s"] / 60, abs=1e-3)
    # the host's speed was measured in both sittings (the killed one never reached its end)
    lines = (tmp_path / "results" / "runs" / run_id / "metrics.jsonl").read_text().splitlines()
    calibrations = [json.loads(line) for line in lines if '"calibration"' in line]
    assert [(c["segment"], c["when"]) for c in calibrations] == [
        (1, "start"),
        (2, "start"),
        (2, "end"),
    ]
    assert resumed["host_speed"]["calibration_ms"] == [c["ms"] for c in calibrations]
    # and the totals are those of the same run done in one go, within contended-timing noise
    ratio = r["runtime_s"] / reference["resources"]["runtime_s"]
    assert 0.5 < ratio < 2.0, ratio


@pytest.mark.parametrize("cores", [1, 4])
def test_cpu_percent_divides_by_the_usable_cores(monkeypatch, cores: int) -> None:
    monkeypatch.setattr(resources.os, "sched_getaffinity", FakeMachine(cores).affinity)
    assert resources.usable_cores() == cores
    meter = ResourceMeter(interval=0.05).start()
    spin(0.3)
    epoch = meter.mark_epoch()
    spin(0.2)
    totals = meter.stop()
    assert totals["usable_cores"] == cores
    for part, wall, cpu in ((epoch, "wall_s", "cpu_s"), (totals, "runtime_s", "cpu_s")):
        assert part[cpu] > 0.05
        assert part["cpu_percent"] == pytest.approx(
            100 * part[cpu] / part[wall] / cores,
            abs=rounding_error(part[cpu], part[wall], cores, unit=1e-4),
        )
    # one busy thread can hold at most one core: 100 / cores (plus what the meter's own
    # sampling thread and the interpreter's housekeeping add: 101.7% was seen with 1 core)
    assert totals["cpu_percent"] <= 1.05 * 100 / cores + 1
    assert totals["runtime_s"] >= 0.5 and epoch["wall_s"] >= 0.3


class FakeMachine:
    """Scripted clocks for resources.py: wall time, our CPU time, and per-core system times."""

    RSS = 300 * 2**20  # bytes (not resources.MB: the record's MB must be 2**20 bytes)

    def __init__(self, cores: int, steal_field: bool = True) -> None:
        self.cores, self.wall, self.cpu, self.busy, self.steal = cores, 100.0, 10.0, 50.0, 3.0
        self.steal_field = steal_field  # False: a platform whose CPU times have no steal
        self.system_percent = 37.0  # what psutil.cpu_percent reports next

    def advance(self, wall: float, cpu: float, others: float = 0.0, steal: float = 0.0) -> None:
        """``wall`` seconds pass; we use ``cpu`` CPU seconds, other processes ``others``."""
        self.wall += wall
        self.cpu += cpu
        self.busy += cpu + others
        self.steal += steal

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from types import SimpleNamespace as NS

        machine = self

        class Process:
            def cpu_times(self):
                return NS(user=0.75 * machine.cpu, system=0.25 * machine.cpu)

            def memory_info(self):
                return NS(rss=machine.RSS)

        def cpu_times(percpu: bool = False):
            n = machine.cores  # the busy and steal seconds spread over the cores
            # no irq/softirq fields, as on platforms without them: they count as 0
            steal = {"steal": machine.steal / n} if machine.steal_field else {}
            return [
                NS(user=machine.busy / n / 2, nice=0.0, system=machine.busy / n / 2, **steal)
                for _ in range(n)
            ]

        cpu_percent = lambda interval=None: machine.system_percent  # noqa: E731
        monkeypatch.setattr(resources, "psutil", NS(Process=Process, cpu_times=cpu_times,
                                                    cpu_percent=cpu_percent))  # fmt: skip
        monkeypatch.setattr(resources, "time", NS(perf_counter=lambda: machine.wall))
        monkeypatch.setattr(resources.os, "sched_getaffinity", machine.affinity)

    def affinity(self, pid: int) -> set[int]:
        """This process (pid 0) may use every core; anything else is asked about another one."""
        return set(range(self.cores)) if pid == 0 else {0}


def test_meter_arithmetic_on_scripted_clocks(monkeypatch) -> None:
    machine = FakeMachine(cores=4)
    machine.install(monkeypatch)
    meter = ResourceMeter(interval=3600).start()  # the sampler thread never fires here
    machine.advance(wall=10, cpu=8, others=12, steal=1)
    first = meter.mark_epoch()
    assert first["wall_s"] == 10 and first["cpu_s"] == 8
    assert first["cpu_percent"] == 100 * 8 / 10 / 4 == 20.0
    assert first["others_cpu_percent"] == 100 * 12 / 40 == 30.0
    assert first["steal_percent"] == 2.5 and first["contended"] is True
    assert first["cpu_percent_peak"] == 20.0 and first["system_cpu_percent"] == 37.0
    assert first["rss_mb"] == 300.0 and first["rss_mb_peak"] == 300.0

    meter.pause()  # e.g. dev evaluation: none of this counts
    machine.advance(wall=5, cpu=5, others=1, steal=1)
    meter.pause()  # a second pause changes nothing
    meter.resume()
    machine.advance(wall=10, cpu=2, others=0.5)
    assert meter.peek() == {"runtime_s": 20, "cpu_s": 10, "system_busy_s": 22.5, "steal_s": 1,
                            "cpu_percent": 100 * 10 / 20 / 4}  # fmt: skip
    meter.resume()  # resuming a running meter changes nothing
    machine.advance(wall=10, cpu=2)
    second = meter.mark_epoch()
    assert second["wall_s"] == 20 and second["cpu_s"] == 4 and second["cpu_percent"] == 5.0
    assert second["others_cpu_percent"] == round(100 * 0.5 / 80, 2) and second["contended"] is False
    assert second["cpu_percent_peak"] == 5.0  # per-epoch peak: this epoch's samples only
    assert second["steal_percent"] == 0.0  # the steal during the pause is not this run's

    machine.advance(wall=0, cpu=0)
    totals = meter.stop()
    assert totals["runtime_s"] == 30 and totals["runtime_min"] == 0.5
    assert totals["cpu_s"] == 12 and totals["cpu_percent"] == 100 * 12 / 30 / 4 == 10.0
    assert totals["paused_s"] == 5 and totals["usable_cores"] == 4
    assert totals["system_busy_s"] == 24.5 and totals["steal_s"] == 1
    assert (
        totals["others_cpu_percent"] == round(100 * 12.5 / 120, 2) and totals["contended"] is True
    )
    assert totals["steal_percent"] == round(100 / 120, 2)
    assert totals["cpu_percent_peak"] == 20.0 and totals["samples"] == 2
    assert totals["system_cpu_percent_mean"] == 37.0 and totals["sampled_rss_peak_mb"] == 300.0
    assert meter.stop() is totals  # idempotent
    # the peak RSS covers this run only where the kernel's high-water mark could be reset
    resettable = resources.os.access("/proc/self/clear_refs", resources.os.W_OK)
    assert totals["peak_rss_is_process_lifetime"] is not resettable


def test_meter_on_scripted_clocks_without_time_passing(monkeypatch) -> None:
    machine = FakeMachine(cores=2)
    machine.install(monkeypatch)
    meter = ResourceMeter(interval=3600).start()
    epoch = meter.mark_epoch()
    assert epoch["cpu_percent"] is None and epoch["cpu_percent_peak"] is None
    assert epoch["system_cpu_percent"] is None and epoch["contended"] is None
    assert meter.peek()["cpu_percent"] is None
    machine.advance(wall=0.5, cpu=0.5)
    assert meter.peek()["cpu_percent"] == 100 * 0.5 / 0.5 / 2
    meter.pause()
    machine.advance(wall=3, cpu=1)
    totals = meter.stop()  # while paused: the pause so far is counted as paused
    assert totals["paused_s"] == 3 and totals["runtime_s"] == 0.5 and totals["cpu_s"] == 0.5
    assert totals["samples"] == 1 and totals["cpu_percent_peak"] == 50.0


def test_meter_on_scripted_clocks_without_any_time(monkeypatch) -> None:
    FakeMachine(cores=2, steal_field=False).install(monkeypatch)
    totals = ResourceMeter(interval=3600).start().stop()
    assert totals["cpu_percent"] is None and totals["samples"] == 0
    assert totals["steal_s"] == 0.0 and totals["system_busy_s"] == 0.0
    assert totals["cpu_percent_peak"] is None and totals["system_cpu_percent_mean"] is None


@pytest.mark.parametrize("earlier_s", [0.0, 0.5, 1200.0])
def test_run_resources_add_every_segment(monkeypatch, earlier_s: float) -> None:
    """train._resources on scripted clocks, with minutes large enough that every figure shows in
    its rounding: runtime, CPU time and contention over all segments (a first segment of
    ``earlier_s`` seconds at 1 core busy, then 1800 s at 2 of 4 cores), CPU% over both, and the
    per-example and per-epoch figures from the recorded epochs."""
    from types import SimpleNamespace as NS

    machine = FakeMachine(cores=4)
    machine.install(monkeypatch)
    meter = ResourceMeter(interval=3600).start()
    machine.advance(wall=1800, cpu=3600, others=360)
    usage = meter.stop()
    earlier = {"runtime_s": earlier_s, "cpu_s": earlier_s, "system_busy_s": earlier_s,
               "steal_s": 0.0}  # fmt: skip
    epochs = [NS(epoch_time_s=t) for t in (700.0, 800.0, 900.0)]
    state = NS(elapsed=earlier, epoch_rows=lambda: epochs, model=torch.nn.Linear(3, 2),
               optimizer=torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.1))  # fmt: skip
    data = NS(gold=[0] * 50_000, stats={"read_s": 1.5, "featurize_s": 2.5})
    r = train._resources(NS(torch_threads=2), state, data, usage)

    runtime, cpu = 1800 + earlier_s, 3600 + earlier_s
    assert r.runtime_s == runtime and r.runtime_min == round(runtime / 60, 3)
    assert r.cpu_s == cpu and r.cpu_percent == round(100 * cpu / runtime / 4, 2)
    assert r.system_busy_s == cpu + 360 and r.steal_s == 0.0
    assert r.others_cpu_percent == round(100 * 360 / (runtime * 4), 2) and r.contended is False
    assert r.cpu_s_per_1k_examples == round(1000 * cpu / (50_000 * 3), 4)
    assert r.epoch_time_s_mean == 800.0 and r.examples_per_s == round(150_000 / 2400, 1)
    assert r.n_parameters == 8 and r.torch_threads == 2 and r.usable_cores == 4
    assert (r.data_load_s, r.featurize_s) == (1.5, 2.5)


def test_epoch_figures_are_the_mean_and_peak_of_its_samples(monkeypatch) -> None:
    """Two samples in one epoch (a pause closes one): system CPU% is their mean, the CPU% peak
    their max; an idle run's peak is 0, and an interval of 1 ms or less is no sample."""
    machine = FakeMachine(cores=2)
    machine.install(monkeypatch)
    machine.wall = 0.0  # so that 1 ms below is exactly 1e-3 s
    meter = ResourceMeter(interval=3600).start()
    machine.advance(wall=0.001, cpu=0.001)
    meter.pause()  # too short an interval to sample
    meter.resume()
    machine.system_percent = 20.0
    machine.advance(wall=1, cpu=0)
    meter.pause()  # sample 1: our CPU 0%, the system's 20%
    meter.resume()
    machine.system_percent = 60.0
    machine.advance(wall=1, cpu=0.5)
    epoch = meter.mark_epoch()  # sample 2: 25% and 60%
    assert epoch["system_cpu_percent"] == 40.0 and epoch["cpu_percent_peak"] == 25.0
    totals = meter.stop()
    assert totals["samples"] == 2 and totals["system_cpu_percent_mean"] == 40.0
    assert totals["cpu_percent_peak"] == 25.0 and totals["runtime_s"] == 2.001

    idle_machine = FakeMachine(cores=2)  # an idle run: every sample reads 0%
    idle_machine.install(monkeypatch)
    idle = ResourceMeter(interval=3600).start()
    idle_machine.advance(wall=100, cpu=0)
    totals = idle.stop()
    assert totals["samples"] == 1 and totals["cpu_percent_peak"] == 0.0


def test_system_times_sum_every_busy_field_of_the_usable_cores(monkeypatch) -> None:
    """Busy = user + nice + system + irq + softirq of each usable core (fields a platform lacks
    count 0), steal on its own; the other cores are not ours to judge."""
    from types import SimpleNamespace as NS

    per_cpu = [
        NS(user=1, nice=2, system=4, irq=8, softirq=16, steal=32),
        NS(user=100, nice=200, system=400, irq=800, softirq=1600, steal=3200),
        NS(user=10_000, nice=0, system=0),  # no irq, softirq or steal fields
    ]
    monkeypatch.setattr(resources.psutil, "cpu_times", lambda percpu=False: per_cpu)
    # this process (pid 0) may use cores 0 and 2; any other pid is another process
    monkeypatch.setattr(resources.os, "sched_getaffinity", lambda pid: {0, 2} if pid == 0 else {1})
    assert resources.system_busy_and_steal_s() == (31 + 10_000, 32)
    assert resources.system_busy_and_steal_s([1]) == (3100, 3200)


def test_peak_rss_falls_back_to_ru_maxrss_in_the_platforms_unit(monkeypatch) -> None:
    """Without /proc the high-water mark cannot be reset, and the peak is getrusage's
    ru_maxrss: kB on Linux, bytes on macOS."""
    from types import SimpleNamespace as NS

    def no_procfs(path, *args, **kwargs):
        raise OSError(f"{path}: no procfs here")

    monkeypatch.setattr(resources, "open", no_procfs, raising=False)
    assert resources.reset_peak_rss() is False  # so the record says the peak is lifelong
    monkeypatch.setattr(resources.resource, "getrusage", lambda who: NS(ru_maxrss=1000))
    monkeypatch.setattr(resources.sys, "platform", "linux")
    assert resources.peak_rss_bytes() == 1_024_000
    monkeypatch.setattr(resources.sys, "platform", "darwin")
    assert resources.peak_rss_bytes() == 1000


def test_contention_thresholds() -> None:
    """A run is contended from 10% of the cores' time taken by others, or 5% stolen."""
    cores, wall = 2, 10.0  # 20 core-seconds
    assert resources.contention(wall, 0.0, 2.0, 0.0, cores)["contended"] is True  # 10%
    assert resources.contention(wall, 0.0, 1.98, 0.0, cores)["contended"] is False  # 9.9%
    assert resources.contention(wall, 0.0, 0.0, 1.0, cores)["contended"] is True  # 5% stolen
    assert resources.contention(wall, 0.0, 0.0, 0.98, cores)["contended"] is False  # 4.9%
    # a fraction of a core-second is still a share (0.1 of 0.5 core-seconds: 20%)
    assert resources.contention(0.25, 0.1, 0.2, 0.0, cores)["others_cpu_percent"] == 20.0
    # counters read a hair apart never give a negative share
    assert resources.contention(wall, 0.0, 0.0, -0.5, cores)["steal_percent"] == 0.0


def test_an_empty_affinity_still_counts_one_core(monkeypatch) -> None:
    monkeypatch.setattr(resources.os, "sched_getaffinity", lambda pid: set())
    assert resources.usable_cores() == 1


def test_the_default_meter_samples_every_half_second() -> None:
    """Twice a second: often enough for a 10-s epoch's peak, rare enough to cost nothing."""
    meter = ResourceMeter().start()
    time.sleep(2.2)
    totals = meter.stop()  # samples at 0.5, 1.0, 1.5 and 2.0 s, and one when stopping
    # a late wake-up on a busy machine may cost one; every 1.5 s would give 2, a busy loop 1000s
    assert 4 <= totals["samples"] <= 5, totals


def test_peak_rss_is_recorded_in_mib(monkeypatch) -> None:
    FakeMachine(cores=2).install(monkeypatch)
    monkeypatch.setattr(resources, "peak_rss_bytes", lambda: 512 * 2**20 + 52_429)  # +0.05 MiB
    assert ResourceMeter(interval=3600).start().stop()["peak_rss_mb"] == 512.1


def test_usable_cores_without_affinity(monkeypatch) -> None:
    """Where the platform has no CPU affinity: the machine's count, else 1."""
    monkeypatch.delattr(resources.os, "sched_getaffinity")
    monkeypatch.setattr(resources.os, "cpu_count", lambda: 3)
    assert resources.usable_cores() == 3
    monkeypatch.setattr(resources.os, "cpu_count", lambda: None)
    assert resources.usable_cores() == 1


def test_meter_must_be_started() -> None:
    meter = ResourceMeter()
    for method in (meter.pause, meter.resume, meter.mark_epoch, meter.peek, meter.stop):
        with pytest.raises(RuntimeError, match="start"):
            method()


def test_peak_rss_is_the_kernels_high_water_mark_in_bytes() -> None:
    """VmHWM from /proc/self/status (kB), in bytes, read between two reads of our own."""

    def vmhwm() -> int:
        with open("/proc/self/status") as fh:
            line = next(line for line in fh if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    before = vmhwm()
    peak = resources.peak_rss_bytes()
    assert before <= peak <= vmhwm()
