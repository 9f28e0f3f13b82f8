"""Peak memory of one call: CUDA allocator statistics, or the CPU's resident set.

On CPU, torch allocates through malloc, which tracemalloc does not see. Instead the
kernel's high-water mark of the resident set (VmHWM) is reset (``5`` to
/proc/self/clear_refs, Linux ≥ 4.0) and read after the call: the peak is VmHWM
minus the resident set before the call. glibc keeps freed blocks in its heap and
raises its mmap threshold as large blocks are freed, which would hide reused
memory; :func:`prepare_cpu_measurement` fixes the threshold at 64 KiB so that tensor
buffers come from (and return to) the kernel, and trims the heap before each call.
Call it only after timing: fresh mmaps make every allocation slower.
"""

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
_libc: ctypes.CDLL | None = None


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            if libc is not None and hasattr(libc, "malloc_trim"):
                _libc = libc
        except OSError:
            return None
    return _libc


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"{field} not in /proc/self/status")


def cpu_method() -> str | None:
    """How CPU peaks are measured here, or None when this system cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _status_bytes("VmHWM")
    except OSError:
        return None
    return "peak RSS delta (VmHWM reset via /proc/self/clear_refs)" + (
        ", glibc mmap threshold 64 KiB" if _glibc() else ""
    )


def prepare_cpu_measurement() -> None:
    """Make freed tensor memory go back to the kernel (see the module docstring)."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Extra memory at the peak of one call of ``fn``; None if not measurable."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    libc = _glibc()
    try:
        if libc is not None:
            libc.malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_bytes("VmRSS")
        fn()
        return max(_status_bytes("VmHWM") - before, 0)
    except OSError as err:
        logger.warning("peak memory not measurable here: %s", err)
        return None
