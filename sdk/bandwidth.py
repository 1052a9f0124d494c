"""This machine's memory bandwidth, measured: the copy test device plugins, the planner and bench share."""

from __future__ import annotations

import time

from quantmatch.sdk.profile import Figure

__all__ = ["measure_copy_bandwidth"]


def measure_copy_bandwidth(size_mib: int = 256, repeats: int = 3) -> Figure:
    """Copy ``size_mib`` MiB between two buffers; best of ``repeats`` in GB/s (bytes read + written).

    A single Python thread doing ``memcpy`` underestimates what multi-threaded kernels reach, which is
    why the figure says so.
    """
    n = size_mib * 2**20
    try:
        src = bytearray(b"\xa5" * n)  # written, so the pages are real and not the shared zero page
        dst = bytearray(n)
        s, d = memoryview(src), memoryview(dst)
        best = float("inf")
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            d[:] = s
            best = min(best, time.perf_counter() - t0)
    except MemoryError as e:
        return Figure(None, "GB/s", "measured", "measured", f"copy test failed: {e!r}")
    gbps = 2 * n / best / 1e9 if best > 0 else None
    return Figure(None if gbps is None else round(gbps, 1), "GB/s", "measured", "measured",
                  f"single-thread memcpy of {size_mib} MiB, best of {repeats} (bytes read + written)")
