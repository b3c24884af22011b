"""The fault cases: each injects one fault into real harness processes and returns Outcomes.

Used by tests/run/test_faults.py (the quick ones, in ``make test``) and scripts/fault_suite.py
(all of them, printed as a table). ``SUITE`` at the bottom lists every case and the split.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from faultlib import (
    SWEEP,
    TRAIN,
    FullFolder,
    Lab,
    Listener,
    Outcome,
    Proc,
    finished_records,
    match_reference,
    read_only_folder,
    records_lost,
    reference_id,
    run_parallel,
    select,
    short,
    summaries_parse,
    temporaries,
    with_overrides,
)

from sm3repro.data.download import EWT_FILES

TRAIN_FILE = EWT_FILES["train"]


# -- bad treebank input ----------------------------------------------------------------------
def _row(i: int | str, form: str, head: int | str, rel: str = "dep", n_cols: int = 10) -> str:
    cols = [str(i), form, form.lower(), "X", "XX", "_", str(head), rel, "_", "_"]
    cols += ["_"] * (n_cols - len(cols))
    return "\t".join(cols[:n_cols])


def _text(*sentences: list[str]) -> bytes:
    return "".join("\n".join(s) + "\n\n" for s in sentences).encode()


GOOD = [_row(1, "Hello", 2), _row(2, "world", 0, "root")]  # lines 1-2, blank line 3


@dataclass(frozen=True)
class BadInput:
    """A malformed training file: its bytes (None: see ``kind``), the line and the phrase
    the one-line error must name."""

    name: str
    content: bytes | None
    line: int | None
    phrase: str
    kind: str = "file"  # or "directory" / "missing": the path given as data.train


BAD_TREEBANKS = [
    BadInput("truncated line", _text(GOOD) + b"1\tThe\tthe\tDET", 4, "found 4"),
    BadInput("9 columns", _text(GOOD, [_row(1, "a", 0, "root", n_cols=9)]), 4, "found 9"),
    BadInput("11 columns", _text(GOOD, [_row(1, "a", 0, "root", n_cols=11)]), 4, "found 11"),
    BadInput(
        "non-integer HEAD", _text(GOOD, [_row(1, "a", 0), _row(2, "b", "x")]), 5, "not an integer"
    ),
    BadInput(
        "HEAD out of range", _text(GOOD, [_row(1, "a", 0), _row(2, "b", 7)]), 5, "out of range"
    ),
    BadInput("self-loop", _text(GOOD, [_row(1, "a", 0), _row(2, "b", 2)]), 5, "self-loop"),
    BadInput("cycle", _text(GOOD, [_row(1, "a", 0), _row(2, "b", 3), _row(3, "c", 2)]), 4, "cycle"),
    BadInput("no root", _text(GOOD, [_row(1, "a", 2), _row(2, "b", 1)]), 4, "no root"),
    BadInput("two roots", _text(GOOD, [_row(1, "a", 0), _row(2, "b", 0)]), 4, "one root"),
    BadInput("duplicate token ID", _text(GOOD, [_row(1, "a", 0), _row(1, "b", 1)]), 5, "duplicate"),
    BadInput("skipped token ID", _text(GOOD, [_row(1, "a", 0), _row(3, "b", 1)]), 5, "skipped"),
    BadInput("empty file", b"", None, "empty"),
    BadInput("comment-only file", b"# sent_id = 1\n# text = nothing\n\n", None, "only comments"),
    BadInput(
        "invalid UTF-8",
        _text(GOOD) + b"1\tcaf\xe9\t_\tX\tXX\t_\t0\troot\t_\t_\n",
        4,
        "invalid UTF-8",
    ),  # a Latin-1 byte: not UTF-8
    BadInput("a directory as data.train", None, None, "is a directory", kind="directory"),
    BadInput("a missing path as data.train", None, None, "no such file", kind="missing"),
]


def bad_input_path(lab: Lab, case: BadInput) -> Path:
    """Write the case's file (or make its directory) under the lab; returns data.train."""
    # A file name per case: the name is part of the run id, and runs with one id exclude
    # each other (the lock), which would hide the error of the second.
    path = lab.root / "bad" / (case.name.replace(" ", "_").replace(".", "_") + ".conllu")
    path.parent.mkdir(parents=True, exist_ok=True)
    if case.kind == "directory":
        path.mkdir(exist_ok=True)
    elif case.kind == "file":
        path.write_bytes(case.content or b"")
    return path


def expected_error(case: BadInput, path: Path) -> str:
    """The start of the one error line: ``file:line: `` or the config key for a bad path."""
    if case.kind != "file":
        return f"data.train={str(path)!r}: {case.phrase}"
    return f"{path}:{case.line}: " if case.line is not None else f"{path}: "


def bad_treebanks(lab: Lab, cases: list[BadInput]) -> list[Outcome]:
    """Each bad file as data.train of a real CLI run (two at a time): one line naming file,
    line and problem; exit 2; no traceback; nothing trained; earlier records untouched."""
    lab.seed_results()
    before = finished_records(lab.results)
    paths = [bad_input_path(lab, case) for case in cases]
    procs = _parallel(lab, [[*TRAIN, f"data.train={p}"] for p in paths])
    after = finished_records(lab.results)
    outcomes = []
    for case, path, proc in zip(cases, paths, procs, strict=True):
        expected = "file:line: problem" if case.kind == "file" else "data.train=path"
        out = Outcome(f"bad treebank: {case.name}", f"exit 2; one line: {expected}")
        errors = proc.error_lines()
        out.observed = f"exit {proc.rc}: " + short(
            errors[-1] if errors else proc.stderr, lab.root, 90
        )
        out.check(proc.rc == 2, f"exit {proc.rc}, expected 2")
        out.check(len(errors) == 1, f"{len(errors)} error lines, expected one")
        if errors:
            message = errors[0].removeprefix("sm3repro: error: ")
            out.check(
                message.startswith(expected_error(case, path)),
                f"the message does not start with {expected_error(case, path)!r}",
            )
            out.check(case.phrase in message, f"the message does not say {case.phrase!r}")
        out.check("Traceback" not in proc.stderr, "a traceback was printed")
        out.check(not proc.trained(), "training started")
        out.lost = records_lost(before, after)
        out.details.append(proc.tail())
        outcomes.append(out)
    return outcomes


def _parallel(lab: Lab, arg_lists: list[list[str]]) -> list[Proc]:
    return run_parallel([lambda a=args: lab.start(*a) for args in arg_lists])


def tolerated_variants(lab: Lab) -> Outcome:
    """CRLF endings, a UTF-8 byte-order mark, trailing spaces in comment lines and no final
    blank line: the run trains and gives the very record the plain file gives."""
    out = Outcome("treebank: CRLF, BOM, comment spaces, no final blank", "parsed; same record")
    variant = lab.root / "variant"
    variant.mkdir()
    for name in EWT_FILES.values():
        shutil.copy(lab.bench.data / name, variant / name)
    text = (lab.bench.data / TRAIN_FILE).read_text(encoding="utf-8").rstrip("\n")
    lines = [line + "  " if line.startswith("#") else line for line in text.split("\n")]
    (variant / TRAIN_FILE).write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    proc = lab.run("optimizer=sgd", *TRAIN, data=variant)
    out.check(proc.rc == 0, f"exit {proc.rc}")
    run_id = reference_id(lab, "sgd")
    matched = match_reference(out, lab, ids=[run_id])
    checksum = [
        json.loads((r / "runs" / run_id / "summary.json").read_text())["data"]["checksums"]["train"]
        for r in (lab.results, lab.bench.reference)
        if (r / "runs" / run_id / "summary.json").is_file()
    ]
    out.check(len(set(checksum)) == 2, "the variant file was not the one read")
    out.observed = f"exit {proc.rc}; record equal to the plain file's: {bool(matched)}"
    out.details.append(proc.tail())
    return out


# -- bad configuration -----------------------------------------------------------------------
ConfigCase = tuple[str, list[str], list[str]]
BAD_CONFIGS: list[ConfigCase] = [
    # (case, overrides, phrases the message must contain: the key and what is allowed)
    ("unknown group option", ["optimizer=adamw"], ["optimizer/adamw", "sgd", "sm3_ii", "adam"]),
    ("wrong type", ["batch_size=large"], ["batch_size", "Integer"]),
    (
        "value not among the choices",
        ["model.activation=gelu"],
        ["model.activation='gelu'", "relu, cube, tanh"],
    ),
    ("lr = 0", ["optimizer.lr=0"], ["optimizer.lr=0.0 must be > 0"]),
    ("lr < 0", ["optimizer.lr=-0.5"], ["optimizer.lr=-0.5 must be > 0"]),
    ("batch_size = 0", ["batch_size=0"], ["batch_size=0 must be > 0"]),
    ("epochs = 0", ["epochs=0"], ["epochs=0 must be > 0"]),
    (
        "data path missing",
        ["data.dir=/nonexistent/ewt"],
        [f"data.train='/nonexistent/ewt/{TRAIN_FILE}': no such file"],
    ),
]


def _key(case: ConfigCase) -> str:
    return case[0]


def bad_configs(lab: Lab, names: list[str] | None = None) -> list[Outcome]:
    """Each bad setting (all, or those ``names`` chooses; an unknown name raises) on the real
    CLI: non-zero exit, the key and the allowed values named, no traceback, no training, no
    record written."""
    cases = BAD_CONFIGS if names is None else select(BAD_CONFIGS, names, _key, "bad-config case")
    lab.seed_results()
    before = finished_records(lab.results)
    runs_before = sorted(p.name for p in (lab.results / "runs").iterdir())
    procs = _parallel(lab, [with_overrides(TRAIN, *overrides) for _, overrides, _ in cases])
    runs_after = sorted(p.name for p in (lab.results / "runs").iterdir())
    after = finished_records(lab.results)
    outcomes = []
    for (name, overrides, phrases), proc in zip(cases, procs, strict=True):
        out = Outcome(f"bad config: {name} ({overrides[0]})", "exit != 0; key and allowed named")
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        shown = lines[0] + (f" / {lines[1]}" if len(lines) > 1 and proc.rc == 1 else "")
        out.observed = f"exit {proc.rc}: " + short(shown, lab.root, 90)
        out.check(proc.rc != 0, "exit 0")
        missing = [p for p in phrases if p not in proc.stderr]
        out.check(not missing, f"the message lacks {missing}")
        out.check("Traceback" not in proc.stderr, "a traceback was printed")
        out.check(not proc.trained(), "training started")
        out.check(runs_after == runs_before, "a run folder was written")
        out.lost = records_lost(before, after)
        out.details.append(proc.tail())
        outcomes.append(out)
    return outcomes


# -- interruption ----------------------------------------------------------------------------
EXIT_FOR = {
    signal.SIGKILL: -signal.SIGKILL,
    signal.SIGTERM: 128 + signal.SIGTERM,
    signal.SIGINT: 130,
}


def _rerun_and_compare(
    out: Outcome, lab: Lab, before: dict[str, str], results: Path | None = None, **kwargs
) -> Proc:
    """The user's recovery: run the same sweep again; it must end equal to the reference."""
    results = results or lab.results
    rerun = lab.run(*SWEEP, results=results, **kwargs)
    out.check(rerun.rc == 0, f"the rerun exited {rerun.rc}")
    out.check(not temporaries(results), f"temporary files left: {temporaries(results)}")
    matched = match_reference(out, lab, results)
    out.lost += records_lost(before, finished_records(results))
    resumed = rerun.output.count("resuming after epoch")
    out.observed += f"; rerun: {resumed} resumed, {matched}/2 records = uninterrupted sweep"
    out.details.append(rerun.tail("rerun"))
    return rerun


def kill_after_checkpoint(lab: Lab) -> Outcome:
    """SIGKILL right after epoch 1's checkpoint (the SM3REPRO_FAULT hook), then rerun."""
    out = Outcome("SIGKILL right after a checkpoint", "rerun resumes; records = reference")
    killed = lab.run(*SWEEP, env={"SM3REPRO_FAULT": "kill_after_epoch:1"})
    out.check(killed.rc == -signal.SIGKILL, f"exit {killed.rc}, expected SIGKILL")
    out.check(not summaries_parse(lab.results), "; ".join(summaries_parse(lab.results)))
    out.observed = f"exit {killed.rc} after epoch 1"
    out.details.append(killed.tail("killed run"))
    rerun = _rerun_and_compare(out, lab, before={})
    out.check("resuming after epoch 1" in rerun.output, "the rerun did not resume from epoch 1")
    return out


# Moments in a sweep: (description, condition on the results folder and the output so far,
# data set to use).
def _any(pattern: str) -> Callable[[Path, str], bool]:
    return lambda results, output: any((results / "runs").glob(pattern))


POINTS: dict[str, tuple[Callable[[Path, str], bool], str]] = {
    # the first run has said it is reading the data (full EWT: ~2 s); no run folder exists yet
    "during data loading": (lambda results, output: "loading data" in output, "full"),
    # the checkpoint after epoch 1 exists: the run is in epoch 2 (training or dev parsing)
    "mid-epoch": (_any("*/checkpoint.pt"), "mini"),
    # the second run's folder exists: the first run has finished
    "in the second run": (
        lambda results, output: len(list((results / "runs").glob("*/config.yaml"))) >= 2,
        "mini",
    ),
}


def signal_at(lab: Lab, sig: signal.Signals, point: str) -> Outcome:
    """A real signal at a moment of the sweep, then the rerun; SIGINT goes to the process
    group, as a terminal's Ctrl-C does."""
    condition, dataset = POINTS[point]
    data = lab.bench.full_data if dataset == "full" else lab.bench.data
    out = Outcome(f"{sig.name} {point}", "no half record; rerun = reference")
    live = lab.start(*SWEEP, data=data)
    reached = live.wait_for(lambda: condition(lab.results, live.text()), timeout=240)
    before = finished_records(lab.results)
    live.send(sig, group=sig == signal.SIGINT)
    proc = live.finish()
    out.details.append(proc.tail("interrupted run"))
    out.observed = f"exit {proc.rc}"
    if not out.check(reached, f"the sweep ended (exit {proc.rc}) before the point was reached"):
        return out
    out.check(proc.rc == EXIT_FOR[sig], f"exit {proc.rc}, expected {EXIT_FOR[sig]}")
    out.check("Traceback" not in proc.stderr, "a traceback was printed")
    if sig == signal.SIGINT:
        out.check("sm3repro: interrupted" in proc.stderr, "no 'interrupted' message")
    out.check(not summaries_parse(lab.results), "; ".join(summaries_parse(lab.results)))
    if point == "during data loading":  # the run folder is made only after loading
        folders = [p.name for p in lab.results.glob("runs/*")]
        out.check(not folders, f"run folders left by a run stopped while loading: {folders}")
    states = [json.loads(p.read_text())["status"] for p in lab.results.glob("runs/*/summary.json")]
    out.observed += f", records {', '.join(sorted(states)) or 'none'}"
    _rerun_and_compare(out, lab, before, data=data)
    return out


def random_kills(lab: Lab, trials: int = 3, seed: int = 0) -> Outcome:
    """SIGKILL at a random moment of a fresh sweep, then the rerun; several trials."""
    rng = random.Random(seed)
    out = Outcome(f"SIGKILL at {trials} random moments", "no half record; rerun = reference")
    moments, matched = [], 0
    for trial in range(trials):
        results = lab.root / f"results-{trial}"
        live = lab.start(*SWEEP, results=results)
        delay = rng.uniform(0.2, 0.95) * lab.bench.sweep_s  # any moment of an uninterrupted sweep
        live.wait_for(lambda: False, timeout=delay)  # sleeps, unless the sweep ends first
        before = finished_records(results)
        live.send(signal.SIGKILL)
        ended_first = live.finish().rc != -signal.SIGKILL
        running = len(list(results.glob("runs/*/summary.json"))) - len(before)
        state = "ended first" if ended_first else f"{len(before)} done, {running} running"
        moments.append(f"{delay:.1f}s ({state})")
        out.check(not summaries_parse(results), "; ".join(summaries_parse(results)))
        problems = len(out.problems)
        _rerun_and_compare(out, lab, before, results=results)
        matched += len(out.problems) == problems
    out.observed = f"killed at {', '.join(moments)}; {matched}/{trials} reruns = reference"
    return out


def leftover_temporaries(lab: Lab) -> Outcome:
    """Half-written ``.<file>.*.tmp`` files, as a SIGKILL during a write leaves them."""
    out = Outcome("stale .tmp files from a kill mid-write", "ignored, removed; runs skipped")
    lab.seed_results()
    before = finished_records(lab.results)
    for run_dir in (lab.results / "runs").iterdir():
        (run_dir / ".summary.json.k1ll3d.tmp").write_text('{"status": "compl')
        (run_dir / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"PK\x03\x04half")
    proc = lab.run(*SWEEP)
    out.check(proc.rc == 0, f"exit {proc.rc}")
    out.check(not proc.trained(), f"runs were retrained: {sorted(proc.trained())}")
    out.check(not temporaries(lab.results), "the .tmp files are still there")
    out.lost = records_lost(before, finished_records(lab.results))
    out.observed = (
        f"exit {proc.rc}; {proc.output.count('already completed')} runs skipped, "
        f"{len(temporaries(lab.results))} .tmp left"
    )
    out.details.append(proc.tail())
    return out


# -- corruption ------------------------------------------------------------------------------
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    # file -> (how it is damaged, the warning phrase)
    "summary.json": (_truncate, "summary.json is damaged"),
    "metrics.jsonl": (_truncate, "metrics.jsonl does not match the summary"),
    "config.yaml": (lambda p: p.unlink(), "config.yaml is missing"),
}


def damaged_record(lab: Lab, name: str) -> Outcome:
    """A finished record with a damaged file: the rerun warns and redoes that run only."""
    damage, phrase = DAMAGE[name]
    out = Outcome(f"{name} of a finished run damaged", "warning; that run redone; = reference")
    lab.seed_results()
    before = finished_records(lab.results)
    victim = reference_id(lab, "sgd")
    damage(lab.results / "runs" / victim / name)
    proc = lab.run(*SWEEP)
    out.check(proc.rc == 0, f"exit {proc.rc}")
    out.check(phrase in proc.stderr, f"no warning saying {phrase!r}")
    out.check(proc.trained() == {victim: 2}, f"trained {proc.trained()}, expected {victim} alone")
    match_reference(out, lab)
    out.lost = records_lost(before, finished_records(lab.results))
    warned = next((ln for ln in proc.stderr.splitlines() if phrase in ln), "no warning")
    warned = warned.split("Warning: ")[-1].replace(victim, "<run>")
    out.observed = f"retrained {sorted(proc.trained())}; warned: " + short(warned, lab.root, 70)
    out.details.append(proc.tail())
    return out


def damaged_checkpoint(lab: Lab) -> Outcome:
    """A truncated checkpoint (killed after epoch 1, then cut in half): the run restarts."""
    out = Outcome("truncated checkpoint", "warning; run restarts; = reference")
    killed = lab.run(*SWEEP, env={"SM3REPRO_FAULT": "kill_after_epoch:1"})
    checkpoints = list(lab.results.glob("runs/*/checkpoint.pt"))
    if not out.check(
        killed.rc == -signal.SIGKILL and len(checkpoints) == 1,
        f"no checkpoint to damage (exit {killed.rc})",
    ):
        out.details.append(killed.tail())
        return out
    _truncate(checkpoints[0])
    out.observed = "killed after epoch 1, checkpoint cut in half"
    rerun = _rerun_and_compare(out, lab, before={})
    out.check("is unreadable" in rerun.output, "no warning about the checkpoint")
    out.check("resuming after epoch" not in rerun.output, "resumed from a damaged checkpoint")
    return out


def damaged_feature_cache(lab: Lab) -> Outcome:
    """A truncated feature cache file: warned, rebuilt, and the run is unaffected."""
    out = Outcome("truncated feature cache", "warning; cache rebuilt; = reference")
    shutil.copytree(lab.bench.cache, lab.cache)
    caches = list(lab.cache.glob("train-*.npz"))
    for cache in caches:
        _truncate(cache)
    proc = lab.run("optimizer=sgd", *TRAIN)
    out.check(proc.rc == 0, f"exit {proc.rc}")
    out.check("is unreadable" in proc.stderr and "rebuilding" in proc.stderr, "no warning")
    match_reference(out, lab, ids=[reference_id(lab, "sgd")])
    out.check(all(_loads(c) for c in caches), "the cache was not rebuilt")
    out.observed = f"exit {proc.rc}; warned; cache readable again: {all(map(_loads, caches))}"
    out.details.append(proc.tail())
    return out


def _loads(npz: Path) -> bool:
    import numpy as np

    try:
        with np.load(npz) as data:
            return len(data["gold"]) > 0
    except Exception:
        return False


def stale_feature_cache(lab: Lab) -> Outcome:
    """The training file changes after its features were cached: the old cache is reported
    and removed, the features rebuilt from the new file."""
    out = Outcome("stale feature cache (train file changed)", "warning; rebuilt; = reference")
    data = lab.root / "data"
    shutil.copytree(lab.bench.data, data)
    first = lab.run("optimizer=sgd", *with_overrides(TRAIN, "epochs=1"), data=data)
    old = set(lab.cache.glob("train-*.npz"))
    # A trailing comment-only block: the sentences are the same, the checksum is not.
    with open(data / TRAIN_FILE, "a", encoding="utf-8") as fh:
        fh.write("# edited after the cache was built\n\n")
    proc = lab.run("optimizer=sgd", *TRAIN, data=data)
    new = set(lab.cache.glob("train-*.npz"))
    out.check(first.rc == 0 and proc.rc == 0, f"exits {first.rc}, {proc.rc}")
    out.check("earlier version" in proc.stderr, "no warning about the stale cache")
    out.check(len(old) == 1 and not (old & new) and len(new) == 1, f"caches {old} -> {new}")
    match_reference(out, lab, ids=[reference_id(lab, "sgd")])
    out.observed = f"exit {proc.rc}; warned; {len(old)} stale cache replaced by {len(new - old)}"
    out.details += [first.tail("first run"), proc.tail("after the edit")]
    return out


# -- concurrency -----------------------------------------------------------------------------
def concurrent_sweeps(lab: Lab) -> Outcome:
    """Two identical sweeps started together on one results folder: a lock per run, so each
    run is trained once, by one of them, and every record is complete."""
    out = Outcome("two sweeps at once, same results folder", "each run trained once; complete")
    grid = ["-m", "optimizer=sgd,sm3_ii,adagrad", *TRAIN]
    first, second = lab.start(*grid), lab.start(*grid)
    a, b = first.finish(), second.finish()
    out.details += [a.tail("sweep A"), b.tail("sweep B")]
    out.check(a.rc == 0 and b.rc == 0, f"exits {a.rc}, {b.rc}")
    records = finished_records(lab.results)
    out.check(len(records) == 3, f"{len(records)} finished records, expected 3")
    for run_id in records:
        times = a.trained().get(run_id, 0) + b.trained().get(run_id, 0)
        out.check(times == 2, f"{run_id}: {times // 2} trainings (epoch lines {times})")
    out.check(not summaries_parse(lab.results), "; ".join(summaries_parse(lab.results)))
    match_reference(out, lab)  # the two runs the reference has
    locked = a.output.count("another process") + b.output.count("another process")
    out.observed = (
        f"A trained {len(a.trained())}, B {len(b.trained())}; {locked} found locked; "
        f"{len(records)}/3 complete"
    )
    return out


# -- storage ---------------------------------------------------------------------------------
def read_only_results(lab: Lab) -> Outcome:
    """The results folder cannot be written (not even by root): a clear error up front."""
    out = Outcome("read-only results folder", "exit 2, clear error before training")
    with read_only_folder(lab.results, seed=lab.seed_results) as mechanism:
        before = finished_records(lab.results)
        proc = lab.run(*SWEEP, "seed=1")
        after = finished_records(lab.results)
    _error_before_training(out, proc, "not writable")
    out.lost = records_lost(before, after)
    out.observed = f"[{mechanism}] exit {proc.rc}: " + short(" ".join(proc.error_lines()), lab.root)
    return out


def _error_before_training(out: Outcome, proc: Proc, phrase: str) -> None:
    out.details.append(proc.tail())
    out.check(proc.rc == 2, f"exit {proc.rc}, expected 2")
    out.check(len(proc.error_lines()) == 1, "not exactly one error line")
    out.check(phrase in proc.stderr, f"the error does not say {phrase!r}")
    out.check("Traceback" not in proc.stderr, "a traceback was printed")
    out.check(not proc.trained(), "training started")


def full_results_at_start(lab: Lab) -> Outcome:
    """No space left at all: the writability probe fails before any training."""
    out = Outcome("full results folder (0 bytes free)", "exit 2, clear error before training")
    folder = FullFolder(lab.results, free=0, seed=lab.seed_results)
    try:
        before = finished_records(lab.results)
        proc = lab.run(*SWEEP, "seed=1", preexec_fn=folder.preexec())
        after = finished_records(lab.results)
    finally:
        folder.close()
    _error_before_training(out, proc, "No space left" if folder.mounted else "File too large")
    out.lost = records_lost(before, after)
    errors = " ".join(proc.error_lines())
    out.observed = f"[{folder.mechanism}] exit {proc.rc}: " + short(errors, lab.root)
    return out


def full_results_mid_run(lab: Lab) -> Outcome:
    """The disk fills during a run: the failing write (the checkpoint) is reported with its
    file, earlier records stay intact, and after freeing space the rerun completes."""
    out = Outcome("results folder fills up mid-run", "exit 2 naming the file; rerun completes")
    shutil.copytree(lab.bench.cache, lab.cache)  # the feature cache is not part of this fault
    folder = FullFolder(lab.results, free=64 << 10, seed=lab.seed_results)
    try:
        before = finished_records(lab.results)
        proc = lab.run("optimizer=adagrad", *TRAIN, preexec_fn=folder.preexec())
        out.details.append(proc.tail("full"))
        out.check(proc.rc == 2, f"exit {proc.rc}, expected 2")
        errors = proc.error_lines()
        out.check(len(errors) == 1 and "checkpoint.pt" in errors[0], "the error names no file")
        out.check("Traceback" not in proc.stderr, "a traceback was printed")
        out.check(not summaries_parse(lab.results), "; ".join(summaries_parse(lab.results)))
        out.observed = f"[{folder.mechanism}] exit {proc.rc}: " + short(" ".join(errors), lab.root)
        folder.grow()
        rerun = lab.run("optimizer=adagrad", *TRAIN, preexec_fn=folder.preexec())
        out.details.append(rerun.tail("after freeing space"))
        after = finished_records(lab.results)
    finally:
        folder.close()
    out.check(rerun.rc == 0 and len(after) == 3, f"rerun exit {rerun.rc}, {len(after)} records")
    out.lost = records_lost(before, after)
    out.observed += f"; after freeing space: exit {rerun.rc}"
    return out


# -- tracking --------------------------------------------------------------------------------
DUMMY_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters: no login prompt
WANDB_BOUND_S = 60  # the most extra time W&B may cost a run when there is no network


def wandb_modes(lab: Lab) -> list[Outcome]:
    """One run per W&B mode, side by side. Online points at a refused loopback port (no
    network); offline and disabled point at a listener that must see no connection."""
    args = ["optimizer=sgd", *with_overrides(TRAIN, "logger=wandb", "logger.init_timeout=15")]
    with Listener() as offline_net, Listener() as disabled_net:
        modes = {
            "disabled": {"WANDB_MODE": "disabled", "WANDB_BASE_URL": disabled_net.url},
            "offline": {"WANDB_MODE": "offline", "WANDB_BASE_URL": offline_net.url},
            "online": {
                "WANDB_MODE": "online",
                "WANDB_BASE_URL": "http://127.0.0.1:9",
                "WANDB_API_KEY": DUMMY_KEY,
            },
        }
        live = {
            mode: lab.start(
                *args, f"logger.dir={lab.root / mode}", results=lab.root / mode, env=env
            )
            for mode, env in modes.items()
        }
        procs = {mode: p.finish() for mode, p in live.items()}
        connections = {"disabled": disabled_net.connections, "offline": offline_net.connections}
    sgd = [reference_id(lab, "sgd")]
    outcomes = []
    for mode in ("online", "offline", "disabled"):
        proc = procs[mode]
        expected = "finishes within 60 s extra, warns" if mode == "online" else "no connection"
        out = Outcome(
            f"W&B {mode}" + (" without network" if mode == "online" else ""),
            f"complete record; {expected}",
        )
        out.details.append(proc.tail(mode))
        out.check(proc.rc == 0, f"exit {proc.rc}")
        match_reference(out, lab, results=lab.root / mode, ids=sgd)
        if mode == "online":
            extra = proc.wall_s - procs["disabled"].wall_s
            out.check(extra <= WANDB_BOUND_S, f"{extra:.0f} s extra, bound {WANDB_BOUND_S} s")
            out.check("W&B (online) could not start" in proc.output, "no warning")
            out.observed = f"exit {proc.rc}; +{extra:.0f} s vs disabled; warned"
        else:
            out.check(connections[mode] == 0, f"{connections[mode]} connections to the network")
            offline_runs = list((lab.root / mode / "wandb").glob("offline-run-*"))
            out.check(bool(offline_runs) == (mode == "offline"), f"W&B run folders: {offline_runs}")
            out.observed = (
                f"exit {proc.rc}; {connections[mode]} connections; {len(offline_runs)} W&B run"
            )
        outcomes.append(out)
    return outcomes


def wandb_online_silent_server(lab: Lab) -> Outcome:
    """Online against a server that accepts and never answers (a dead proxy). Also the
    listener's positive control: it does see W&B's connections."""
    out = Outcome("W&B online, server never answers", "finishes within 60 s extra, warns")
    args = ["optimizer=sgd", *with_overrides(TRAIN, "logger=wandb", "logger.init_timeout=15")]
    baseline = lab.run(*args, results=lab.root / "baseline", env={"WANDB_MODE": "disabled"})
    with Listener() as net:
        proc = lab.run(
            *args,
            results=lab.root / "online",
            env={"WANDB_MODE": "online", "WANDB_BASE_URL": net.url, "WANDB_API_KEY": DUMMY_KEY},
        )
    extra = proc.wall_s - baseline.wall_s
    out.details += [baseline.tail("baseline"), proc.tail("online")]
    out.check(proc.rc == 0 and baseline.rc == 0, f"exits {baseline.rc}, {proc.rc}")
    out.check(extra <= WANDB_BOUND_S, f"{extra:.0f} s extra")
    out.check(net.connections > 0, "the listener saw no connection (its zero proves nothing)")
    out.check("could not start" in proc.output, "no warning")
    match_reference(out, lab, results=lab.root / "online", ids=[reference_id(lab, "sgd")])
    out.observed = f"exit {proc.rc}; +{extra:.0f} s; {net.connections} connections seen; warned"
    return out


# -- numerical -------------------------------------------------------------------------------
def diverging_run(lab: Lab) -> Outcome:
    """SGD at lr 1000 diverges: the record says so and the report lists it as diverged."""
    out = Outcome("diverging run (sgd, lr 1000)", "status diverged; listed in the report")
    lab.seed_results()
    before = finished_records(lab.results)
    proc = lab.run("optimizer=sgd", "optimizer.lr=1000", *TRAIN)
    out.details.append(proc.tail())
    out.check(proc.rc == 0, f"exit {proc.rc}")
    diverged = {r: fp for r, fp in finished_records(lab.results).items() if r not in before}
    summaries = [json.loads(fp)["summary"] for fp in diverged.values()]
    out.check([s["status"] for s in summaries] == ["diverged"], f"statuses {summaries}")
    out.check(all("non-finite" in (s["reason"] or "") for s in summaries), "no reason given")
    report = subprocess.run(
        [sys.executable, "-m", "sm3repro.report", "--results", str(lab.results)],
        cwd=lab.root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out.details.append(f"--- report (exit {report.returncode}) ---\n{report.stdout}{report.stderr}")
    report_md = lab.results / "REPORT.md"
    text = report_md.read_text() if report_md.is_file() else ""
    listed = [ln for ln in text.splitlines() if any(r in ln for r in diverged)]
    out.check(report.returncode == 0, f"the report exited {report.returncode}")
    out.check(any("diverged" in ln for ln in listed), "REPORT.md does not list the run as diverged")
    out.lost = records_lost(before, finished_records(lab.results))
    shown = " ".join(ln.strip("| ") for ln in listed[:1]) or "not listed"
    out.observed = f"status {[s['status'] for s in summaries]}; REPORT.md: " + short(
        shown, lab.root, 60
    )
    return out


# -- the suite -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    group: str
    name: str
    run: Callable[[Lab], list[Outcome]]
    in_make_test: bool  # also run by tests/run/test_faults.py; False: the fault suite only (slow)


def _one(fn: Callable[..., Outcome], *args) -> Callable[[Lab], list[Outcome]]:
    return lambda lab: [fn(lab, *args)]


# The treebank cases tests/run/test_faults.py runs through the CLI; the suite runs them all.
# Chosen by name when this module loads, so a renamed case fails loudly instead of dropping out.
CLI_TREEBANK_SAMPLE = select(
    BAD_TREEBANKS,
    [
        "truncated line",
        "cycle",
        "invalid UTF-8",
        "empty file",
        "a directory as data.train",
        "a missing path as data.train",
    ],
    lambda case: case.name,
    "bad-treebank case",
)
SIG = signal.Signals

SUITE: list[Case] = [
    Case("bad input", "malformed treebanks", lambda lab: bad_treebanks(lab, BAD_TREEBANKS), False),
    Case("bad input", "tolerated variants", _one(tolerated_variants), True),
    Case("bad config", "bad settings", bad_configs, True),
    Case("interruption", "SIGKILL after checkpoint", _one(kill_after_checkpoint), True),
    Case("interruption", "SIGTERM mid-epoch", _one(signal_at, SIG.SIGTERM, "mid-epoch"), True),
    Case(
        "interruption",
        "SIGINT during data loading",
        _one(signal_at, SIG.SIGINT, "during data loading"),
        True,
    ),
    Case("interruption", "SIGKILL mid-epoch", _one(signal_at, SIG.SIGKILL, "mid-epoch"), False),
    Case("interruption", "SIGINT mid-epoch", _one(signal_at, SIG.SIGINT, "mid-epoch"), False),
    Case(
        "interruption",
        "SIGTERM during data loading",
        _one(signal_at, SIG.SIGTERM, "during data loading"),
        False,
    ),
    Case(
        "interruption",
        "SIGKILL in the second run",
        _one(signal_at, SIG.SIGKILL, "in the second run"),
        False,
    ),
    Case("interruption", "SIGKILL at random moments", _one(random_kills), False),
    Case("interruption", "stale .tmp files", _one(leftover_temporaries), True),
    Case("corruption", "damaged summary", _one(damaged_record, "summary.json"), True),
    Case("corruption", "damaged metrics", _one(damaged_record, "metrics.jsonl"), True),
    Case("corruption", "missing config", _one(damaged_record, "config.yaml"), False),
    Case("corruption", "truncated checkpoint", _one(damaged_checkpoint), True),
    Case("corruption", "truncated feature cache", _one(damaged_feature_cache), False),
    Case("corruption", "stale feature cache", _one(stale_feature_cache), False),
    Case("concurrency", "two sweeps at once", _one(concurrent_sweeps), True),
    Case("storage", "read-only results", _one(read_only_results), True),
    Case("storage", "full results at start", _one(full_results_at_start), False),
    Case("storage", "results fill up mid-run", _one(full_results_mid_run), True),
    Case("tracking", "W&B modes", wandb_modes, True),
    Case("tracking", "W&B server never answers", _one(wandb_online_silent_server), False),
    Case("numerical", "diverging run", _one(diverging_run), True),
]
