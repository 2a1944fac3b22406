"""Hand the heap that large request bodies leave behind back to the OS.

A body of a few MB arrives in socket reads of up to 256 KB, below glibc's mmap threshold, so
the pieces come from the heap. Once freed they are reused, but the heap cannot shrink past the
small long-lived objects allocated among them meanwhile, and RSS stays at the peak of
concurrent large bodies seen so far (measured: 76 to 105 MiB after the same 16-request burst of
3 MB images, depending on how the requests overlapped). ``malloc_trim(0)`` returns the free
pages inside the heap as well as at its top.

After a request whose body was at least :data:`LARGE_BODY_BYTES` has finished, the heap is
trimmed on a worker thread, at most once per :data:`MIN_GAP_S` (a request that ends in the gap
schedules one trim for the gap's end). Small-body traffic never trims. Only on glibc;
elsewhere this does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import time
from collections.abc import Callable

LARGE_BODY_BYTES = 1 << 20
MIN_GAP_S = 1.0
"""A trim that hands back ~40 MB takes ~9 ms (madvise calls; ~10 us with nothing to hand back).
It runs on a worker thread, at most once a second."""

_trim_fn: Callable[[int], int] | bool | None = False
"""False: not looked up yet; None: not glibc."""
_last = 0.0
_pending: asyncio.TimerHandle | None = None
trims = 0
"""How many trims ran in this process (for tests and the curious)."""


def _malloc_trim() -> Callable[[int], int] | None:
    global _trim_fn
    if _trim_fn is False:
        name = ctypes.util.find_library("c")
        fn = None
        if name:
            try:
                fn = getattr(ctypes.CDLL(name), "malloc_trim", None)
            except OSError:  # pragma: no cover - libc always loads where find_library found it
                fn = None
        if fn is not None:
            fn.argtypes = [ctypes.c_size_t]
            fn.restype = ctypes.c_int
        _trim_fn = fn
    return _trim_fn if callable(_trim_fn) else None


def trim() -> bool:
    """Trim now, on this thread; False where there is no ``malloc_trim``."""
    global trims
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    trims += 1
    return True


def _start() -> None:
    global _pending, _last
    _pending = None
    _last = time.monotonic()
    with contextlib.suppress(RuntimeError):  # the default executor is shut down: stopping
        asyncio.get_running_loop().run_in_executor(None, trim)


def after_large_body() -> None:
    """A request with a large body has finished: trim on a worker thread now, or once
    :data:`MIN_GAP_S` has passed since the last trim began."""
    global _pending
    if _pending is not None:
        return
    wait = _last + MIN_GAP_S - time.monotonic()
    _pending = asyncio.get_running_loop().call_later(max(wait, 0.0), _start)
