"""Train one configuration (or sweep many with ``-m``): the harness users drive.

    python -m sm3repro.train optimizer=sm3_ii batch_size=64
    python -m sm3repro.train -m optimizer=sm3_ii,adam batch_size=64,512 seed=0,1
    python -m sm3repro.train -m experiment=paper

Each run writes ``results/runs/<run_id>/`` (config, metrics, summary, predictions) and
checkpoints after every epoch, so rerunning a sweep skips finished runs and resumes the rest.
Read top to bottom: ``run`` (load the data, ``build`` the training state, then make the run
folder), ``_train`` (restore, then per epoch ``train_epoch``, ``evaluate_epoch``, checkpoint),
``_resources`` and ``_score_test`` (the final summary), ``main`` (Hydra's task function).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
from datetime import UTC, datetime

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from sm3repro.data.treebank import TreebankError, write_conllu
from sm3repro.io import atomic_write_text
from sm3repro.optim import build_optimizer, optimizer_state_bytes
from sm3repro.optim.registry import sparse_rows_config
from sm3repro.parser.dataset import ParserData, load_data_once
from sm3repro.parser.model import ChenManningParser
from sm3repro.paths import config_dir
from sm3repro.record.folder import RunDir, RunLocked
from sm3repro.record.identity import run_id_for
from sm3repro.record.provenance import provenance
from sm3repro.record.schema import (
    DEV_METRICS,
    BestDev,
    CalibrationRow,
    DevPoint,
    EpochRow,
    FinalScores,
    Resources,
    RunSummary,
    Scores,
    Status,
)
from sm3repro.run import sweep_summary
from sm3repro.run.config import ConfigError, validate  # importing it registers the schema
from sm3repro.run.epoch import DevPointHook, EpochTraining, train_epoch
from sm3repro.run.evaluation import evaluate
from sm3repro.run.resources import ResourceMeter, contention, tune_malloc
from sm3repro.run.state import (
    ELAPSED_KEYS,
    TrainingState,
    lr_scheduler,
    restore_checkpoint,
    save_checkpoint,
    weight_average,
)
from sm3repro.run.step_timing import calibrate_host, host_speed, step_cost
from sm3repro.run.tracking import Tracker, make_tracker

log = logging.getLogger("sm3repro")
CONF_DIR = str(config_dir())  # conf/ in a checkout, sm3repro/conf in a wheel


def _sigterm_as_exit(signum, frame) -> None:  # noqa: ARG001
    raise SystemExit(128 + signum)  # unwinds through finally blocks (W&B finish, lock release)


def _fault_hook(point: str, epoch: int | None = None) -> None:
    """Testing aid: ``SM3REPRO_FAULT=kill_after_epoch:N`` SIGKILLs this process right after
    epoch N's checkpoint is written, ``kill_before_run_folder`` once the data is loaded and the
    optimizer built, so fault tests interrupt a run at a known point."""
    fault = os.environ.get("SM3REPRO_FAULT", "")
    if fault == (point if epoch is None else f"{point}:{epoch}"):
        os.kill(os.getpid(), signal.SIGKILL)


# -- one run ---------------------------------------------------------------------------------
def run(cfg: DictConfig) -> dict:
    """Train, evaluate and record one configuration; returns its summary (as summary.json)."""
    validate(cfg)
    if cfg.optimized_metric not in DEV_METRICS:
        raise ConfigError(
            f"optimized_metric={cfg.optimized_metric!r} is not allowed; "
            f"choose one of {', '.join(DEV_METRICS)}"
        )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    record = RunDir(cfg.results_dir, run_id_for(resolved))
    record.check_writable()  # fails early, and clearly, on a read-only or full results folder
    try:
        if (previous := record.finished_summary()) is not None:
            with record.locked():  # taking the lock also clears what a killed writer left
                sweep_summary.note(record.run_id, "skipped")
                return _skip(record, previous)
        log.info("run %s: loading data", record.run_id)
        data = load_data_once(cfg)
        state, optimizer_impl = build(cfg, data, record.run_id)
        _fault_hook("kill_before_run_folder")
        record.create()  # only now: a run stopped while loading or building leaves no folder
        with record.locked():
            # Another sweep may have finished this run meanwhile (its warnings were given above).
            if (previous := record.finished_summary(warn=False)) is not None:
                sweep_summary.note(record.run_id, "skipped")
                return _skip(record, previous)
            summary = _train(cfg, resolved, record, data, state, optimizer_impl).to_dict()
    except RunLocked:
        sweep_summary.note(record.run_id, "locked")
        raise
    sweep_summary.note(record.run_id, "trained")
    return summary


def _skip(record: RunDir, previous: dict) -> dict:
    log.info("run %s already %s; skipping", record.run_id, previous["status"])
    record.checkpoint_path.unlink(missing_ok=True)  # left if killed just after finishing
    return previous


def build(cfg: DictConfig, data: ParserData, run_id: str) -> tuple[TrainingState, str]:
    """The seeded model, its optimizer, lr schedule and weight average, and the shuffling RNG;
    returns them as a fresh training state, and the optimizer's implementation name."""
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    opt_cfg, sparse_words, sparse_note = sparse_rows_config(cfg.optimizer, cfg.sparse_rows)
    model = new_model(cfg, data, sparse_words=sparse_words).to(torch.device(cfg.device))
    if cfg.data.embeddings:
        data.stats["pretrained_words"] = model.load_pretrained(
            cfg.data.embeddings, data.vocab.words
        )
    optimizer, optimizer_impl = build_optimizer(model.parameters(), opt_cfg)
    optimizer_impl += sparse_note
    generator = torch.Generator().manual_seed(cfg.seed)
    total_steps = cfg.epochs * math.ceil(len(data.gold) / cfg.batch_size)
    scheduler = lr_scheduler(optimizer, cfg.lr_schedule, total_steps)
    averaged = weight_average(model, cfg.ema_decay)
    state = TrainingState(run_id, model, optimizer, scheduler, averaged, generator)
    return state, optimizer_impl


def new_model(
    cfg: DictConfig, data: ParserData, sparse_words: bool = False, dropout: bool = True
) -> ChenManningParser:
    """The parser the config describes (``dropout=False``: without either dropout, the host
    calibration's fixed workload)."""
    vocab = data.vocab
    return ChenManningParser(
        len(vocab.words), len(vocab.tags), len(vocab.labels), vocab.n_transitions,
        embed_dim=cfg.model.embed_dim, hidden=tuple(cfg.model.hidden),
        activation=cfg.model.activation, dropout=cfg.model.dropout if dropout else 0.0,
        word_dropout=cfg.model.word_dropout if dropout else 0.0, word_counts=vocab.word_counts,
        sparse_word_grads=sparse_words,
    )  # fmt: skip


def _train(
    cfg: DictConfig, resolved: dict, record: RunDir, data: ParserData, state: TrainingState,
    optimizer_impl: str,
) -> RunSummary:  # fmt: skip
    summary = _new_summary(cfg, record, data, optimizer_impl)
    if cfg.checkpoint and restore_checkpoint(record.checkpoint_path, state):
        summary.resumed_from_epoch = state.epoch
        log.info("run %s: resuming after epoch %d", record.run_id, state.epoch)
    atomic_write_text(record.config_path, OmegaConf.to_yaml(cfg, resolve=True))
    record.write_metrics(state.metrics)
    record.write_summary(summary)
    device = torch.device(cfg.device)
    features = torch.from_numpy(data.features).to(device)
    gold = torch.from_numpy(data.gold.astype(np.int64)).to(device)
    with _tracker(cfg, record, resolved) as tracker:
        _calibrate(cfg, state, data, features, gold, "start")
        state.meter = ResourceMeter().start()
        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            hook = _dev_point_hook(cfg, state, data, epoch, tracker)
            trained = train_epoch(cfg, state, features, gold, epoch, tracker, hook)
            if trained.diverged is not None:
                summary.status, summary.reason = Status.DIVERGED, trained.diverged
                record.write_metrics(state.metrics)  # keep the losses
                log.warning(
                    "run %s diverged in epoch %d: %s", record.run_id, epoch, trained.diverged
                )
                break
            row = evaluate_epoch(cfg, state, data, epoch, trained)
            tracker.log_epoch(epoch, row.loggable())
            log.info(
                "run %s epoch %d/%d: loss %.4f acc %.4f dev LAS %.4f UAS %.4f (%.1f s)",
                record.run_id, epoch, cfg.epochs, row.train_loss, row.train_accuracy,
                row.dev_las_micro, row.dev_uas_micro, trained.seconds,
            )  # fmt: skip
            state.epoch = summary.epochs_completed = epoch
            record.write_metrics(state.metrics)
            if cfg.checkpoint and epoch < cfg.epochs:
                save_checkpoint(record.checkpoint_path, state)
            record.write_summary(summary)
            _fault_hook("kill_after_epoch", epoch)
        summary.resources = _resources(cfg, state, data, state.meter.stop())
        _calibrate(cfg, state, data, features, gold, "end")
        record.write_metrics(state.metrics)
        summary.step_cost = step_cost(
            [row.phases for row in state.epoch_rows() if row.phases is not None],
            len(data.gold) * len(state.epoch_rows()),
        )
        summary.host_speed = host_speed(state.rows(CalibrationRow))
        if summary.status == Status.RUNNING:
            summary.status = Status.COMPLETED
            _score_test(cfg, state, data, record, summary)
        summary.provenance["finished_at"] = _now()
        record.write_summary(summary)
        tracker.log_summary(summary.flat())
        _log_record(tracker, record)
    record.checkpoint_path.unlink(missing_ok=True)
    return summary


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _new_summary(cfg: DictConfig, record: RunDir, data: ParserData, impl: str) -> RunSummary:
    return RunSummary(
        run_id=record.run_id, status=Status.RUNNING, optimizer=cfg.optimizer.name,
        optimizer_impl=impl, batch_size=cfg.batch_size, seed=cfg.seed, epochs=cfg.epochs,
        experiment=cfg.experiment_name, group=cfg.experiment_name, data=data.stats,
        provenance={**provenance(), "started_at": _now()},
    )  # fmt: skip


def _tracker(cfg: DictConfig, record: RunDir, resolved: dict) -> Tracker:
    return make_tracker(
        cfg.logger, run_name=record.run_id, run_id=record.run_id, config=resolved,
        group=cfg.experiment_name, tags=[cfg.optimizer.name, f"batch{cfg.batch_size}"],
        directory=cfg.logger.dir, job_type="train",
    )  # fmt: skip


def _calibrate(
    cfg: DictConfig, state: TrainingState, data: ParserData, features: torch.Tensor,
    gold: torch.Tensor, when: str,
) -> None:  # fmt: skip
    """The host's speed on a fixed forward+backward, before and after this segment's training."""
    done = state.rows(CalibrationRow)
    segment = sum(row.when == "start" for row in done) + (when == "start")
    ms = calibrate_host(lambda: new_model(cfg, data, dropout=False), features, gold)
    state.metrics.append(CalibrationRow(segment=segment, when=when, ms=ms, at=_now()))
    log.info("run %s: host calibration (%s of segment %d): %.3f ms", state.run_id, when,
             segment, ms)  # fmt: skip


def _dev_point_hook(
    cfg: DictConfig, state: TrainingState, data: ParserData, epoch: int, tracker: Tracker
) -> DevPointHook:
    """Scores dev inside the epoch (meter paused, as at its end) and records the point."""
    earlier_s = sum(row.epoch_time_s for row in state.epoch_rows())

    def dev_point(step: int, epoch_s: float) -> None:
        assert state.meter is not None
        state.meter.pause()
        dev = Scores.from_dict(evaluate(state.evaluated, data, data.dev, cfg)[0])
        state.meter.resume()
        point = DevPoint.of(epoch, step, earlier_s + epoch_s, dev)
        state.metrics.append(point)
        tracker.log_step(step, {f"dev_point/{k}": v for k, v in point.to_dict().items()
                                if k.startswith("dev_") or k == "train_s"})  # fmt: skip

    return dev_point


def _log_record(tracker: Tracker, record: RunDir) -> None:
    """The run's record files as a W&B artifact (offline-safe: `wandb sync` uploads it)."""
    files = (record.config_path, record.metrics_path, record.summary_path, record.predictions_path)
    tracker.log_files(f"record-{record.run_id}", "run-record", [p for p in files if p.is_file()])


def evaluate_epoch(
    cfg: DictConfig, state: TrainingState, data: ParserData, epoch: int, trained: EpochTraining
) -> EpochRow:
    """Close the epoch's resource window, score dev, note the best epoch; returns its row."""
    assert state.meter is not None
    usage = state.meter.mark_epoch()
    state.meter.pause()  # dev parsing is evaluation, not training time
    dev = Scores.from_dict(evaluate(state.evaluated, data, data.dev, cfg)[0])
    state.meter.resume()
    earlier_s = sum(r.epoch_time_s for r in state.epoch_rows())
    row = EpochRow(
        epoch=epoch, train_loss=trained.train_loss, train_accuracy=trained.train_accuracy,
        dev_uas_micro=dev.uas_micro, dev_las_micro=dev.las_micro,
        dev_uas_macro=dev.uas_macro, dev_las_macro=dev.las_macro,
        epoch_time_s=round(trained.seconds, 3),
        examples_per_s=round(trained.examples / trained.seconds, 1),
        cpu_percent=usage.get("cpu_percent"), system_cpu_percent=usage.get("system_cpu_percent"),
        rss_mb=usage.get("rss_mb"), others_cpu_percent=usage.get("others_cpu_percent"),
        steal_percent=usage.get("steal_percent"), contended=usage.get("contended"),
        phases=trained.phases,
    )  # fmt: skip
    state.metrics.append(row)
    state.metrics.append(DevPoint.of(epoch, trained.last_step, earlier_s + row.epoch_time_s, dev))
    state.note_dev(epoch, dev)
    return row


def _resources(cfg: DictConfig, state: TrainingState, data: ParserData, usage: dict) -> Resources:
    """The run's cost: this segment's meter totals, with runtime, CPU time and contention over
    every segment."""
    total = {key: state.elapsed[key] + usage[key] for key in ELAPSED_KEYS}
    runtime_s = round(total["runtime_s"], 3)
    cores = usage["usable_cores"]
    cpu_percent = usage["cpu_percent"]
    if state.elapsed["runtime_s"] > 0:  # resumed: CPU% over all segments of the run
        cpu_percent = round(100 * total["cpu_s"] / runtime_s / cores, 2)
    times = [row.epoch_time_s for row in state.epoch_rows()]
    examples = len(data.gold) * len(times)
    return Resources(
        **{**usage, "runtime_s": runtime_s, "runtime_min": round(runtime_s / 60, 3),
           "cpu_percent": cpu_percent, "cpu_s": round(total["cpu_s"], 4),
           "system_busy_s": round(total["system_busy_s"], 3),
           "steal_s": round(total["steal_s"], 3),
           **contention(total["runtime_s"], total["cpu_s"], total["system_busy_s"],
                        total["steal_s"], cores)},
        cpu_s_per_1k_examples=round(1000 * total["cpu_s"] / examples, 4) if examples else None,
        optimizer_state_bytes=optimizer_state_bytes(state.optimizer),
        n_parameters=sum(p.numel() for p in state.model.parameters()),
        torch_threads=cfg.torch_threads, data_load_s=data.stats["read_s"],
        featurize_s=data.stats["featurize_s"],
        epoch_time_s_mean=round(float(np.mean(times)), 3) if times else None,
        examples_per_s=round(len(data.gold) * len(times) / sum(times), 1) if times else None,
    )  # fmt: skip


def _score_test(
    cfg: DictConfig, state: TrainingState, data: ParserData, record: RunDir, summary: RunSummary
) -> None:
    """Test scores of the final model (its parses saved) and of the best-dev epoch's."""
    last = state.epoch_rows()[-1]
    test, heads, rels = evaluate(state.evaluated, data, data.test, cfg)
    write_conllu(record.predictions_path, data.test.sentences, heads, rels)
    summary.final = FinalScores(
        train_loss=last.train_loss, train_accuracy=last.train_accuracy,
        dev=Scores.from_dict(last.dev()), test=Scores.from_dict(test),
    )  # fmt: skip
    assert state.best is not None
    state.evaluated.load_state_dict(state.best.weights)
    best_test = evaluate(state.evaluated, data, data.test, cfg)[0]
    summary.best_dev = BestDev(
        epoch=state.best.epoch, dev=state.best.dev, test=Scores.from_dict(best_test)
    )


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    tune_malloc()
    signal.signal(signal.SIGTERM, _sigterm_as_exit)
    try:
        summary = run(cfg)
    except RunLocked as err:
        log.warning("%s; skipping it here", err)
        return None
    except KeyboardInterrupt:
        # Ctrl-C: records are written atomically and the last checkpoint stays; say so, no traceback.
        if cfg.debug:
            raise
        print("sm3repro: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    except (ConfigError, TreebankError, OSError) as err:
        if cfg.debug:
            raise
        print(f"sm3repro: error: {err}", file=sys.stderr)
        sys.exit(2)
    # What a Hydra sweeper optimises: a dev score, never test.
    return RunSummary.from_dict(summary).dev_metric(cfg.optimized_metric)


if __name__ == "__main__":
    main()
