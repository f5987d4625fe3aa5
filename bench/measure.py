"""What the benchmarks share: the peak memory of one call and the runs kept per method.

Peak memory is the rise of the process's resident-set high-water mark over its level at :meth:`Peak.start`
(Linux /proc/self/clear_refs resets the mark; freed heap is handed back first with glibc's malloc_trim, so that
one method cannot run in memory another left behind), or of CUDA's peak allocation on a GPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
from dataclasses import dataclass, field
from pathlib import Path

# Resident-set readings move in whole pages and allocator chunks: peaks under 1 MiB are read as 1 MiB
# in ratios, so "nothing measurable" does not turn into an absurd quotient.
MIN_MIB = 1.0


def rss_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so the next peak starts clean."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
            ctypes.CDLL(name).malloc_trim(0)


def ratio(a: float, b: float) -> float:
    return max(a, MIN_MIB) / max(b, MIN_MIB)


def out_of_memory(err: BaseException) -> bool:
    """True for an allocation that failed: CUDA's, Python's, or torch's CPU allocator (a RuntimeError)."""
    import torch

    return isinstance(err, torch.OutOfMemoryError | MemoryError) or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err))


@dataclass
class Runs:
    """The timed runs of one method on one input."""

    seconds: list[float] = field(default_factory=list)
    peaks_mib: list[float] = field(default_factory=list)
    error: str | None = None


class Peak:
    """The peak memory rise, in MiB, between :meth:`start` and :meth:`stop`."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.before = 0.0

    def start(self) -> None:
        import torch

        release_freed_memory()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated() / 1024
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark
            self.before = rss_kib("VmRSS")

    def synchronize(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def stop(self) -> float:
        import torch

        self.synchronize()
        peak = (torch.cuda.max_memory_allocated() / 1024 if self.cuda else rss_kib("VmHWM")) - self.before
        return max(peak, 0) / 1024
