"""Files that never lose work: atomic JSON writes and append-only JSONL logs that survive torn lines."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ocr_heads.core.errors import OutputBusy

logger = logging.getLogger(__name__)


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Write JSON to a temp file in the same directory, then rename: readers never see half a file."""
    write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text (JSON, a CSV) to a temp file in the same directory, then rename: readers never see half a
    file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file 0600; a result file gets the mode open() would give it (the umask's).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Yield the complete records of a JSONL file; a torn last line (a crash mid-write) is skipped."""
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and not line.endswith("\n"):
                logger.warning("%s: ignoring a torn last line (interrupted write); it will be redone", path)
                continue
            raise ValueError(f"{path}:{number} is not valid JSON") from None


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one record and flush it to disk, repairing a torn last line first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _drop_torn_tail(path)
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _drop_torn_tail(path: Path) -> None:
    # Only the last byte is read on the common path: a log is appended to once per sample, and reading it whole
    # every time made a long run's appends quadratic.
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        keep = handle.read().rfind(b"\n") + 1
        handle.truncate(keep)


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and prove it takes files; a clear ValueError otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output dir {path} is not writable: it exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(f"output dir {path} is not writable: {err.strerror or err}") from None
    return path


# Open lock files of this process, released by release_output_locks() (run_cli does it when a command ends).
_HELD: dict[Path, int] = {}


def lock_output(path: str | Path, wait: bool = False) -> None:
    """Hold an exclusive lock on ``path`` (a ``.lock`` file beside an output) until the command ends.

    A second writer of the same output is refused with :class:`OutputBusy` (or waits for the first with
    ``wait``), so two processes never interleave one log. ``flock`` locks belong to the open file: the OS
    drops them when the holder dies, so a killed run leaves no stale lock behind.
    """
    path = Path(path).resolve()
    if path in _HELD:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if wait:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info("%s: another process writes this output; waiting for it to finish", path)
                started = time.monotonic()
                fcntl.flock(fd, fcntl.LOCK_EX)
                logger.info("%s: lock acquired after %.0f s", path, time.monotonic() - started)
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OutputBusy(f"{path.with_suffix('')} is being written by another process (lock {path}); "
                                 "wait for it, or pass --wait to queue behind it") from None
    except BaseException:
        os.close(fd)
        raise
    _HELD[path] = fd


def release_output_locks() -> None:
    """Release every lock :func:`lock_output` took in this process."""
    while _HELD:
        _, fd = _HELD.popitem()
        os.close(fd)  # closing the last descriptor of the open file drops its flock
