"""Train one configuration (or sweep many with ``-m``): the harness users drive.

    python -m sm3repro.train optimizer=sm3_ii batch_size=64
    python -m sm3repro.train -m optimizer=sm3_ii,adam batch_size=64,512 seed=0,1
    python -m sm3repro.train -m experiment=paper

Each run writes ``results/runs/<run_id>/`` (config, metrics, summary, predictions) and
checkpoints after every epoch, so rerunning a sweep skips finished runs and resumes the rest.
"""

from __future__ import annotations

import copy
import ctypes
import logging
import math
import os
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from sm3repro import sweep_summary
from sm3repro.config import ConfigError, validate  # importing it registers the schema
from sm3repro.data.treebank import TreebankError, write_conllu
from sm3repro.dataset import EvalSet, ParserData, load_data
from sm3repro.metrics import attachment_scores
from sm3repro.optim import build_optimizer, optimizer_state_bytes
from sm3repro.parser.decode import parse
from sm3repro.parser.model import ChenManningParser
from sm3repro.paths import config_dir
from sm3repro.provenance import provenance
from sm3repro.records import RunDir, RunLocked, atomic_write_bytes, atomic_write_text, run_id_for
from sm3repro.resources import ResourceMeter
from sm3repro.tracking import make_tracker

log = logging.getLogger("sm3repro")
CONF_DIR = str(config_dir())  # conf/ in a checkout, sm3repro/conf in a wheel


def _tune_malloc() -> None:
    """Keep glibc from returning the embedding gradient to the OS after every step (it was
    page-faulted back each time: ~70% slower steps at batch 64)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _sigterm_as_exit(signum, frame) -> None:  # noqa: ARG001
    raise SystemExit(128 + signum)  # unwinds through finally blocks (W&B finish, lock release)


_DATA_MEMO: dict[str, ParserData] = {}


def _load_data_once(cfg: DictConfig) -> ParserData:
    """A multirun trains many configs in one process: read and featurize the data once."""
    key = OmegaConf.to_yaml(cfg.data, resolve=True)
    if key not in _DATA_MEMO:
        _DATA_MEMO.clear()  # keep one data set in memory, not one per sweep value
        _DATA_MEMO[key] = load_data(cfg.data, cfg.cache_dir)
        return _DATA_MEMO[key]
    data = _DATA_MEMO[key]
    data.stats = {**data.stats, "read_s": 0.0, "featurize_s": 0.0, "reused_in_process": True}
    return data


def _fault_hook(point: str, epoch: int) -> None:
    """Testing aid: ``SM3REPRO_FAULT=kill_after_epoch:N`` SIGKILLs this process right after
    epoch N's checkpoint is written, so fault tests interrupt a run at a known point."""
    fault = os.environ.get("SM3REPRO_FAULT", "")
    if fault == f"{point}:{epoch}":
        os.kill(os.getpid(), signal.SIGKILL)


# -- evaluation ------------------------------------------------------------------------------
def evaluate(model: ChenManningParser, data: ParserData, split: EvalSet, cfg: DictConfig):
    """Parse a split and score it: returns (scores, heads, relation names)."""
    heads, rels = parse(model, split.corpus)
    relations = data.vocab.relations
    pred_heads, pred_rels = [], []
    for k, sent in enumerate(split.sentences):
        n = len(sent)
        pred_heads.append(heads[k, 1 : n + 1].tolist())
        pred_rels.append([relations[r] for r in rels[k, 1 : n + 1]])
    scores = attachment_scores(
        split.sentences,
        pred_heads,
        pred_rels,
        punct=cfg.data.eval_punct,
        labels=cfg.data.eval_labels,
    )
    scores = {k: (round(float(v), 6) if isinstance(v, float) else v) for k, v in scores.items()}
    return scores, pred_heads, pred_rels


def _rng_state(generator: torch.Generator) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "shuffle": generator.get_state(),
        "numpy": np.random.get_state(),
    }


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["shuffle"])
    np.random.set_state(state["numpy"])


def _save_checkpoint(path: Path, payload: dict) -> None:
    import io

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _load_checkpoint(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=False)
    except Exception as err:  # truncated or damaged: start the run again
        log.warning("checkpoint %s is unreadable (%s); restarting the run from epoch 1", path, err)
        return None


def _lr_scheduler(optimizer, schedule: str, total_steps: int):
    """Per-step decay of every group's lr to 0 by the last step (None for a constant lr)."""
    from torch.optim import lr_scheduler

    if schedule == "linear":
        return lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total_steps))
    if schedule == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None


def _weight_average(model: ChenManningParser, decay: float | None):
    """An exponential moving average of the weights (Polyak averaging), updated every step;
    dev and test are scored with it. None when ``ema_decay`` is unset."""
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))


# -- one run ---------------------------------------------------------------------------------
def run(cfg: DictConfig) -> dict:
    """Train, evaluate and record one configuration; returns its summary."""
    validate(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    run_id = run_id_for(resolved)
    record = RunDir(cfg.results_dir, run_id)
    record.create()  # fails early, and clearly, on a read-only or full results folder
    try:
        record.lock()
    except RunLocked:
        sweep_summary.note(run_id, "locked")
        raise
    try:
        if (previous := record.finished_summary()) is not None:
            sweep_summary.note(run_id, "skipped")
            return _skip(record, previous)
        try:
            data = _load_data_once(cfg)
        except BaseException:
            record.discard_if_unstarted()  # bad data or Ctrl-C: leave no stray run folder
            raise
        summary = _train(cfg, resolved, record, data)
        sweep_summary.note(run_id, "trained")
        return summary
    finally:
        record.unlock()


def _skip(record: RunDir, previous: dict) -> dict:
    log.info("run %s already %s; skipping", record.run_id, previous["status"])
    record.checkpoint_path.unlink(missing_ok=True)  # left if killed just after finishing
    return previous


def _train(cfg: DictConfig, resolved: dict, record: RunDir, data: ParserData) -> dict:
    torch.set_num_threads(cfg.torch_threads)
    device = torch.device(cfg.device)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_text(record.config_path, OmegaConf.to_yaml(cfg, resolve=True))
    vocab = data.vocab
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = ChenManningParser(
        len(vocab.words), len(vocab.tags), len(vocab.labels), vocab.n_transitions,
        embed_dim=cfg.model.embed_dim, hidden=tuple(cfg.model.hidden),
        activation=cfg.model.activation, dropout=cfg.model.dropout,
        word_dropout=cfg.model.word_dropout, word_counts=vocab.word_counts,
    ).to(device)  # fmt: skip
    if cfg.data.embeddings:
        found = model.load_pretrained(cfg.data.embeddings, vocab.words)
        data.stats["pretrained_words"] = found
    optimizer, optimizer_impl = build_optimizer(model.parameters(), cfg.optimizer)
    generator = torch.Generator().manual_seed(cfg.seed)
    n_batches = math.ceil(len(data.gold) / cfg.batch_size)
    scheduler = _lr_scheduler(optimizer, cfg.lr_schedule, cfg.epochs * n_batches)
    averaged = _weight_average(model, cfg.ema_decay)
    evaluated = averaged.module if averaged is not None else model  # the weights we score

    summary = {
        "run_id": record.run_id,
        "status": "running",
        "optimizer": cfg.optimizer.name,
        "optimizer_impl": optimizer_impl,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "epochs_completed": 0,
        "experiment": cfg.experiment_name,
        "group": cfg.experiment_name,
        "data": data.stats,
        "provenance": {**provenance(), "started_at": started_at},
        "reason": None,
    }
    metrics: list[dict] = []
    start_epoch, best, elapsed = 1, None, {"runtime_s": 0.0, "cpu_s": 0.0}
    checkpoint = _load_checkpoint(record.checkpoint_path) if cfg.checkpoint else None
    if checkpoint is not None and checkpoint.get("run_id") == record.run_id:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        if averaged is not None:
            averaged.load_state_dict(checkpoint["averaged"])
        _set_rng_state(checkpoint["rng"], generator)
        metrics, best = checkpoint["metrics"], checkpoint["best"]
        elapsed = checkpoint["elapsed"]
        start_epoch = checkpoint["epoch"] + 1
        summary["resumed_from_epoch"] = checkpoint["epoch"]
        log.info("run %s: resuming after epoch %d", record.run_id, checkpoint["epoch"])
    record.write_metrics(metrics)
    record.write_summary(summary)

    features = torch.from_numpy(data.features).to(device)
    gold = torch.from_numpy(data.gold.astype(np.int64)).to(device)
    n_examples = len(gold)
    tracker = make_tracker(
        cfg.logger, run_name=record.run_id, run_id=record.run_id, config=resolved,
        group=cfg.experiment_name, tags=[cfg.optimizer.name, f"batch{cfg.batch_size}"],
        directory=cfg.logger.dir,
    )  # fmt: skip
    meter = ResourceMeter()
    status, reason = "completed", None
    with tracker:
        meter.start()
        for epoch in range(start_epoch, cfg.epochs + 1):
            model.train()
            order = torch.randperm(n_examples, generator=generator).to(device)
            # Running sums stay on the device: no host sync per step, only at log points.
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            window_loss, window_steps = torch.zeros((), dtype=torch.float64, device=device), 0
            epoch_start = time.perf_counter()
            progress = _progress(n_batches, epoch, cfg.epochs)
            for b in range(n_batches):
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                x, y = features[idx], gold[idx]
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad()  # set_to_none: backward writes fresh grads, no memset+add
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                if averaged is not None:
                    averaged.update_parameters(model)
                detached = loss.detach()
                loss_sum += detached * len(y)
                window_loss += detached
                window_steps += 1
                correct += (logits.detach().argmax(1) == y).sum()
                if window_steps == cfg.log_every or b == n_batches - 1:
                    step = (epoch - 1) * n_batches + b + 1
                    mean_loss = float(window_loss) / window_steps
                    metrics.append(
                        {"kind": "step", "epoch": epoch, "step": step, "loss": mean_loss}
                    )
                    tracker.log_step(step, {"train/loss": mean_loss})
                    window_loss.zero_()
                    window_steps = 0
                    progress.update(cfg.log_every)
                    if not math.isfinite(mean_loss):
                        status, reason = "diverged", f"non-finite training loss at step {step}"
                        break
            progress.close()
            if status == "diverged":
                record.write_metrics(metrics)  # keep the losses that led up to it
                log.warning("run %s diverged in epoch %d: %s", record.run_id, epoch, reason)
                break
            train_time = time.perf_counter() - epoch_start
            usage = meter.mark_epoch()
            meter.pause()  # dev parsing is evaluation, not training time
            dev_scores, _, _ = evaluate(evaluated, data, data.dev, cfg)
            meter.resume()
            row = {
                "kind": "epoch",
                "epoch": epoch,
                "train_loss": float(loss_sum) / n_examples,
                "train_accuracy": int(correct) / n_examples,
                **{
                    f"dev_{k}": v for k, v in dev_scores.items() if k.endswith(("_micro", "_macro"))
                },
                "epoch_time_s": round(train_time, 3),
                "examples_per_s": round(n_examples / train_time, 1),
                "cpu_percent": usage.get("cpu_percent"),
                "system_cpu_percent": usage.get("system_cpu_percent"),
                "rss_mb": usage.get("rss_mb"),
            }
            metrics.append(row)
            tracker.log_epoch(epoch, {k: v for k, v in row.items() if k not in ("kind", "epoch")})
            log.info(
                "run %s epoch %d/%d: loss %.4f acc %.4f dev LAS %.4f UAS %.4f (%.1f s)",
                record.run_id, epoch, cfg.epochs, row["train_loss"], row["train_accuracy"],
                row["dev_las_micro"], row["dev_uas_micro"], train_time,
            )  # fmt: skip
            if best is None or row["dev_las_micro"] > best["dev"]["las_micro"]:
                best = {
                    "epoch": epoch,
                    "dev": dev_scores,
                    "model": copy.deepcopy(evaluated.state_dict()),
                }
            summary["epochs_completed"] = epoch
            record.write_metrics(metrics)
            if cfg.checkpoint and epoch < cfg.epochs:
                totals = meter.peek()
                _save_checkpoint(
                    record.checkpoint_path,
                    {
                        "run_id": record.run_id, "epoch": epoch, "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(), "rng": _rng_state(generator),
                        "metrics": metrics, "best": best,
                        "scheduler": scheduler.state_dict() if scheduler is not None else None,
                        "averaged": averaged.state_dict() if averaged is not None else None,
                        "elapsed": {"runtime_s": elapsed["runtime_s"] + totals["runtime_s"],
                                    "cpu_s": elapsed["cpu_s"] + totals["cpu_s"]},
                    },
                )  # fmt: skip
            record.write_summary(summary)
            _fault_hook("kill_after_epoch", epoch)
        usage = meter.stop()

        resources = {
            **usage,
            "runtime_s": round(elapsed["runtime_s"] + usage["runtime_s"], 3),
            "optimizer_state_bytes": optimizer_state_bytes(optimizer),
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "torch_threads": cfg.torch_threads,
            "data_load_s": data.stats["read_s"],
            "featurize_s": data.stats["featurize_s"],
        }
        resources["runtime_min"] = round(resources["runtime_s"] / 60, 3)
        if elapsed["runtime_s"] > 0:  # resumed: CPU% over all segments of the run
            cpu_s = elapsed["cpu_s"] + usage["cpu_s"]
            resources["cpu_percent"] = round(
                100 * cpu_s / resources["runtime_s"] / usage["usable_cores"], 2
            )
        epoch_rows = [m for m in metrics if m["kind"] == "epoch"]
        if epoch_rows:
            times = [m["epoch_time_s"] for m in epoch_rows]
            resources["epoch_time_s_mean"] = round(float(np.mean(times)), 3)
            resources["examples_per_s"] = round(n_examples * len(times) / sum(times), 1)

        if status == "completed":
            final_dev = epoch_rows[-1]
            test_scores, heads, rels = evaluate(evaluated, data, data.test, cfg)
            write_conllu(record.predictions_path, data.test.sentences, heads, rels)
            evaluated.load_state_dict(best["model"])
            best_test, _, _ = evaluate(evaluated, data, data.test, cfg)
            summary["final"] = {
                "train_loss": final_dev["train_loss"],
                "train_accuracy": final_dev["train_accuracy"],
                "dev": {k[4:]: v for k, v in final_dev.items() if k.startswith("dev_")},
                "test": test_scores,
            }
            summary["best_dev"] = {"epoch": best["epoch"], "dev": best["dev"], "test": best_test}
        summary.update(
            status=status, reason=reason, resources=resources,
            finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )  # fmt: skip
        summary["provenance"]["finished_at"] = summary.pop("finished_at")
        record.write_summary(summary)
        tracker.log_summary(_flat_summary(summary))
    record.checkpoint_path.unlink(missing_ok=True)
    return summary


def _flat_summary(summary: dict) -> dict:
    keep = {
        k: summary.get(k) for k in ("status", "optimizer", "optimizer_impl", "batch_size", "seed")
    }
    for section in ("final", "best_dev", "resources"):
        for k, v in (summary.get(section) or {}).items():
            if isinstance(v, dict):
                keep.update({f"{section}/{k}/{kk}": vv for kk, vv in v.items()})
            elif not isinstance(v, (list, dict)):
                keep[f"{section}/{k}"] = v
    return keep


def _progress(total: int, epoch: int, epochs: int):
    """A per-epoch progress bar, silent when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False,
                disable=not sys.stderr.isatty(), mininterval=1.0)  # fmt: skip


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    _tune_malloc()
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
    test = (summary.get("final") or {}).get("test") or {}
    return test.get("las_macro")


if __name__ == "__main__":
    main()
