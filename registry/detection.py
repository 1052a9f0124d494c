"""Live detection across every registered device family."""

from __future__ import annotations

import inspect
from dataclasses import replace
from functools import lru_cache

from quantmatch.sdk.device import Detection
from quantmatch.sdk.pluginhost import PluginHost, get_host

__all__ = ["detect_all"]


def detect_all(host: PluginHost | None = None, measure_bandwidth: bool = False) -> list[Detection]:
    """Run every family's ``detect()``; a family that raises is reported, never propagated."""
    host = host or get_host()
    return list(_detect(id(host), host, measure_bandwidth))


@lru_cache(maxsize=4)
def _detect(_key: int, host: PluginHost, measure_bandwidth: bool) -> tuple[Detection, ...]:
    out = []
    for name in sorted(host.families):
        entry = host.families[name]
        fam = entry.obj
        try:
            params = inspect.signature(fam.detect).parameters
            det = fam.detect(measure_bandwidth=True) if measure_bandwidth and "measure_bandwidth" in params \
                else fam.detect()
            # the family's plugin detected these devices: they carry its name and version
            det = replace(det, devices=tuple(d.with_provenance(entry.provenance) for d in det.devices))
        except Exception as e:
            det = Detection(name, (), f"detection failed: {type(e).__name__}: {e}")
        out.append(det)
    return tuple(out)
