"""The SLURM launcher on a real, single-node SLURM started on this machine.

The fixture writes a slurm.conf into a temporary folder (its own state, spool, log and pid
paths, free ports, its own munge key and socket), starts munged, slurmctld and slurmd in the
foreground as children of this process, and stops each by pid at the end, pass or fail.
It needs root (the daemons run as SlurmUser=root) and Debian's `slurm-wlm` and `munge`
packages; without them the test is skipped with one line saying so, unless
``SM3REPRO_REQUIRE_SLURM=1`` (which .ci/run sets after installing them) makes that a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import harness_env, read_records

pytestmark = pytest.mark.slow

DAEMONS = ("munged", "slurmctld", "slurmd")
REQUIRE_ENV = "SM3REPRO_REQUIRE_SLURM"  # "1": a missing SLURM fails instead of skipping
# Two configs, one CPU each, so both jobs run at once on the 2-CPU node.
SWEEP = [
    "optimizer=sgd,adagrad",
    "batch_size=64",
    "data.max_train_sentences=150",
    "data.max_eval_sentences=50",
    "epochs=1",
    "torch_threads=1",
    "logger=none",
]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _slurm_conf(root: Path, host: str, ctld_port: int, slurmd_port: int) -> str:
    return f"""\
ClusterName=sm3repro-test
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
NodeName={host} CPUs=2 RealMemory=2048 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_idle_node(env: dict[str, str], logs: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True)
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True
        ).stdout.split()
        if out == ["idle"] and queue.returncode == 0 and not queue.stdout.strip():
            return
        time.sleep(0.5)
    tails = {p.name: p.read_text()[-1500:] for p in sorted(logs.glob("*")) if p.is_file()}
    raise AssertionError(f"the SLURM node never became idle (sinfo: {out}); logs: {tails}")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A running single-node SLURM; yields the environment that points clients at it."""
    missing = [d for d in (*DAEMONS, "sbatch", "sinfo") if shutil.which(d) is None]
    why = None
    if os.geteuid() != 0:
        why = "starting munged/slurmctld/slurmd needs root (SlurmUser=root)"
    elif missing:
        why = f"slurm-wlm/munge not installed ({', '.join(missing)} missing)"
    if why:
        # CI installs SLURM and sets SM3REPRO_REQUIRE_SLURM=1, so there its absence fails.
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {why}")
        pytest.skip(f"{why}; to run it: apt-get install slurm-wlm munge (as root)")

    root = tmp_path_factory.mktemp("slurm")
    root.chmod(0o755)  # munged's socket must be reachable by the job's processes
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    ctld_port, slurmd_port = _free_ports(2)
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, socket.gethostname(), ctld_port, slurmd_port))
    env = {**os.environ, "SLURM_CONF": str(conf)}

    munged = [
        "munged", "--foreground", "--force", f"--socket={root}/munge.socket",
        f"--key-file={key}", f"--pid-file={root}/munged.pid", f"--seed-file={root}/munged.seed",
        f"--log-file={root}/log/munged.log",
    ]  # fmt: skip
    commands = [munged, ["slurmctld", "-D"], ["slurmd", "-D"]]
    procs: list[subprocess.Popen] = []
    try:
        for command in commands:
            out = open(root / "log" / f"{command[0]}.out", "w")  # noqa: SIM115
            procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=out))
            out.close()
            if command[0] == "munged":
                for _ in range(50):  # slurmctld authenticates through the socket at start
                    if (root / "munge.socket").exists():
                        break
                    time.sleep(0.1)
        _wait_for_idle_node(env, root / "log")
        yield env
        # Jobs first: slurmd's job steps outlive it if it is stopped under them.
        subprocess.run(["scancel", "--full", "--user=root"], env=env, check=False)
        _wait_for_idle_node(env, root / "log")
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _epoch_scores(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keep = ("epoch", "train_loss", "train_accuracy", "dev_las_micro", "dev_las_macro")
    return [{k: r[k] for k in keep} for r in rows if r["kind"] == "epoch"]


def test_submitit_sweep_on_slurm_matches_a_local_sweep(
    slurm: dict[str, str], tmp_path: Path, ewt_dir: Path
) -> None:
    # submitit polls `sacct` and warns on every poll when accounting is off (as here).
    env = {**harness_env(tmp_path / "slurm", ewt_dir), **slurm, "SUBMITIT_LOG_LEVEL": "ERROR"}
    sweep_dir = tmp_path / "slurm" / "multirun"
    proc = subprocess.run(
        [sys.executable, "-m", "sm3repro.train", "-m", "hydra/launcher=submitit_slurm_sm3",
         "hydra.launcher.mem_gb=1", f"hydra.sweep.dir={sweep_dir}", *SWEEP],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "Bypassing sacct error" not in proc.stdout + proc.stderr

    # One job array, one task per config: folders <array id>_<task>.
    job_ids = sorted(
        p.name for p in (sweep_dir / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name)
    )
    assert len(job_ids) == 2, job_ids
    local_env = harness_env(tmp_path / "local", ewt_dir)
    subprocess.run(
        [sys.executable, "-m", "sm3repro.train", "-m", *SWEEP],
        cwd=tmp_path, env=local_env, check=True, capture_output=True, timeout=240,
    )  # fmt: skip

    on_slurm = read_records(tmp_path / "slurm" / "results")
    local = read_records(tmp_path / "local" / "results")
    print(f"SLURM job ids: {job_ids}; runs: {sorted(on_slurm)}")
    assert sorted(on_slurm) == sorted(local) and len(local) == 2
    for run_id, summary in on_slurm.items():
        assert summary["status"] == "completed"
        assert (tmp_path / "slurm" / "results" / "runs" / run_id / "predictions.conllu").is_file()
        for key in ("final", "best_dev", "epochs_completed"):
            assert summary[key] == local[run_id][key], (run_id, key)
        assert _epoch_scores(tmp_path / "slurm" / "results" / "runs" / run_id) == _epoch_scores(
            tmp_path / "local" / "results" / "runs" / run_id
        )
        print(run_id, "test LAS macro", summary["final"]["test"]["las_macro"])
    # The jobs ran under SLURM: slurmctld knows them, and they end COMPLETED (a job can still
    # be exiting for a moment after submitit has read its result).
    for _ in range(60):
        states = subprocess.run(
            ["scontrol", "-o", "show", "job", job_ids[0].split("_")[0]],
            env=slurm, capture_output=True, text=True,
        )  # fmt: skip
        if "JobState=RUNNING" not in states.stdout and "COMPLETING" not in states.stdout:
            break
        time.sleep(1)
    assert states.stdout.count("JobState=COMPLETED") == 2, states.stdout + states.stderr
