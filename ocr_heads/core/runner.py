"""Resumable, shardable per-sample runs.

Each finished sample is appended to a JSONL log at once, so a crash loses at most the sample in
flight; a rerun skips samples already logged (failures are retried). ``--shard i/n`` takes every
n-th sample; shard logs are merged by reading all of them back in sample order.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from ocr_heads.core.errors import Interrupted
from ocr_heads.core.io import append_jsonl, read_jsonl

logger = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1
    launched: bool = False  # started by accelerate launch / torchrun (RANK, WORLD_SIZE set)

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        """``"i/n"`` (0-based i); None means the whole run, or the accelerate/torchrun rank when launched so."""
        if text is None:
            rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
            if rank is None or world is None or int(world) < 2:
                return cls()
            return cls(int(rank), int(world), launched=True)
        match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
        if match is None:
            raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}")
        index, count = int(match.group(1)), int(match.group(2))
        if count < 1 or index >= count:
            raise ValueError(f"--shard {text}: need 0 <= i < n")
        return cls(index, count)

    def device_map(self) -> str | None:
        """Under a multi-process launch on GPUs, each process takes its own local GPU."""
        if not self.launched:
            return None
        import torch

        return f"cuda:{os.environ.get('LOCAL_RANK', self.index)}" if torch.cuda.is_available() else None

    def wait_for_all(self) -> None:
        """Barrier across the processes of ``accelerate launch`` / ``torchrun`` (env:// rendezvous)."""
        if not self.launched:
            return
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        dist.barrier()
        dist.destroy_process_group()

    def select(self, items: list[T]) -> list[T]:
        return items[self.index :: self.count]

    def log_name(self, stem: str) -> str:
        if self.count == 1:
            return f"{stem}.samples.jsonl"
        return f"{stem}.shard{self.index}of{self.count}.samples.jsonl"


# A sample's own failure: logged with its error, the run goes on.
SAMPLE_ERRORS = (RuntimeError, ValueError, OSError, IndexError, KeyError)


def run_samples(
    items: list[T],
    item_id: Callable[[T], str],
    process: Callable[[T], dict],
    log_path: Path,
    desc: str,
) -> tuple[int, int]:
    """Process items not yet logged; returns (succeeded now, failed now). Never raises for one item."""
    return run_batches(items, item_id, lambda batch: [process(batch[0])], log_path, desc, batch_size=1)


def run_batches(
    items: list[T],
    item_id: Callable[[T], str],
    process_batch: Callable[[list[T]], list[dict | Exception]],
    log_path: Path,
    desc: str,
    batch_size: int = 1,
) -> tuple[int, int]:
    """Like :func:`run_samples`, ``batch_size`` items at a time: ``process_batch`` returns one record (or
    the exception that sample failed with) per item, and each sample is logged on its own, so resume,
    shards and merges do not depend on the batch size. If a whole batch raises, its samples are retried
    one by one, so one bad sample costs only itself."""
    def one_log(batch: list[T]) -> list[dict[str, dict | Exception] | Exception]:
        return [outcome if isinstance(outcome, Exception) else {"": outcome} for outcome in process_batch(batch)]

    return run_batches_to_logs(items, item_id, one_log, {"": log_path}, desc, batch_size)


def run_batches_to_logs(
    items: list[T],
    item_id: Callable[[T], str],
    process_batch: Callable[[list[T]], list[dict[str, dict | Exception] | Exception]],
    logs: dict[str, Path],
    desc: str,
    batch_size: int = 1,
) -> tuple[int, int]:
    """:func:`run_batches` for one pass that feeds several logs (step2 with several scores: one log each).

    An item is processed when some log lacks it (a rerun with one more score processes every item once more, for
    that score's log only); ``process_batch`` returns per item either the exception it failed with (logged in
    every log that lacks it) or log name -> record or exception, and each log that lacks the item gets its entry.
    Returns (items that succeeded in every log that lacked them, items that failed in some)."""
    if batch_size < 1:
        raise ValueError(f"--batch_size must be at least 1, got {batch_size}")
    done = {name: {r["id"] for r in read_jsonl(path) if "error" not in r} for name, path in logs.items()}
    todo = [item for item in items if any(item_id(item) not in ids for ids in done.values())]
    for name, path in logs.items():
        finished = sum(item_id(item) in done[name] for item in items)
        if finished:
            logger.info("%s: %d of %d samples already done, resuming", path.name, finished, len(items))
    succeeded = failed = 0
    try:
        with tqdm(total=len(todo), desc=desc, unit="sample") as progress:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                for item, outcome in zip(batch, _process(batch, process_batch), strict=True):
                    key = item_id(item)
                    missing = [name for name in logs if key not in done[name]]
                    entries = {name: outcome if isinstance(outcome, Exception) else outcome[name] for name in missing}
                    errors = {name: entry for name, entry in entries.items() if isinstance(entry, Exception)}
                    for name, err in errors.items():
                        which = f" ({name})" if len(logs) > 1 else ""
                        logger.error("sample %s failed%s: %s: %s", key, which, type(err).__name__, err)
                    for name, entry in entries.items():
                        record = {"error": f"{type(entry).__name__}: {entry}"} if name in errors else entry
                        append_jsonl(logs[name], {"id": key, **record})
                    if errors:
                        failed += 1
                    else:
                        succeeded += 1
                progress.update(len(batch))
    except KeyboardInterrupt:
        # Ctrl-C: every finished sample is logged; say how far it got (run_cli prints it, exit 130).
        raise Interrupted(succeeded + failed) from None
    return succeeded, failed


def _process(batch: list[T], process_batch: Callable[[list[T]], list[R]]) -> list[R | Exception]:
    try:
        outcomes = process_batch(batch)
    except SAMPLE_ERRORS as err:
        if len(batch) == 1:
            return [err]
        logger.warning("a batch of %d failed (%s: %s); retrying its samples one by one", len(batch),
                       type(err).__name__, err)
        return [outcome for item in batch for outcome in _process([item], process_batch)]
    if len(outcomes) != len(batch):
        raise RuntimeError(f"processed {len(outcomes)} records for a batch of {len(batch)}")
    return outcomes


def collect(log_paths: Iterable[Path], order: list[str]) -> tuple[list[dict], list[dict]]:
    """Successful records in ``order`` (the last one per id wins) and the ids that only failed."""
    latest: dict[str, dict] = {}
    for path in log_paths:
        for record in read_jsonl(path):
            if "error" not in record or record["id"] not in latest:
                latest[record["id"]] = record
    ok = [latest[i] for i in order if i in latest and "error" not in latest[i]]
    failed = [latest[i] for i in order if i in latest and "error" in latest[i]]
    return ok, failed


def shard_logs(directory: Path, stem: str) -> list[Path]:
    """Every log of a run: the single-run log and all shard logs."""
    return sorted(directory.glob(f"{stem}.samples.jsonl")) + sorted(directory.glob(f"{stem}.shard*of*.samples.jsonl"))
