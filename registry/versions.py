"""Which runtime version a verdict is for, and the version ranges over which a backend's answer changes.

A capability row may hold for a range of versions of its backend's runtime (``since`` inclusive, ``until``
exclusive). The registry answers for one version per backend: the one the user asked for, else the one
installed here (read from the distribution's metadata, never by importing it), else the newest version the
plugin checked its rows against (:attr:`~quantmatch.sdk.backend.Backend.latest_version`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from typing import Any

from quantmatch.sdk.backend import Backend
from quantmatch.sdk.capability import Capability
from quantmatch.sdk.errors import InputError

__all__ = ["RuntimeVersion", "holds", "installed_version", "parse_runtime_versions", "ranges", "select", "specifier"]


@dataclass(frozen=True)
class RuntimeVersion:
    """The version a backend's verdicts are for: ``runtime`` (a distribution), ``version`` and ``why`` (``asked``,
    ``installed`` or ``latest known``)."""

    runtime: str
    version: str
    why: str

    def __str__(self) -> str:
        return f"{self.runtime} {self.version} ({self.why})"


def parse_runtime_versions(items: Iterable[str]) -> dict[str, str]:
    """``["vllm=0.9.2", ...]`` as ``{"vllm": "0.9.2"}``; names are checked against the backends later."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, version = item.partition("=")
        name, version = name.strip().lower(), version.strip()
        from packaging.version import InvalidVersion, Version

        if not sep or not name or not version:
            raise InputError(f"--runtime-version {item!r}: write NAME=VERSION, for example "
                             "--runtime-version vllm=0.9.2")
        try:
            Version(version)
        except InvalidVersion:
            raise InputError(f"--runtime-version {item!r}: {version!r} is not a version "
                             "(PEP 440, e.g. 0.9.2)") from None
        out[name] = version
    return out


@cache
def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, from its metadata (nothing is imported); ``None`` if absent."""
    from quantmatch.sdk.artifact import library_versions

    return library_versions([distribution]).get(distribution)


def bounded(backend: type[Backend]) -> bool:
    """Whether any of the backend's rows is bounded by runtime versions."""
    return any(c.since or c.until for c in backend.capabilities)


def select(backend: type[Backend], asked: Mapping[str, str], use_installed: bool) -> RuntimeVersion | None:
    """The version ``backend``'s verdicts are for (see the module docstring); ``None`` when it declares no
    runtime."""
    runtime = backend.runtime
    for key in (backend.name, runtime):
        if key and key.lower() in asked:
            return RuntimeVersion(runtime or backend.name, asked[key.lower()], "asked")
    if not runtime:
        return None
    if use_installed:
        got = installed_version(runtime)
        if got is not None:
            return RuntimeVersion(runtime, got, "installed")
    if backend.latest_version:
        return RuntimeVersion(runtime, backend.latest_version, "latest known")
    return None


@cache
def _release(text: str) -> Any:
    from packaging.version import Version  # imported when a version is compared: its regex costs start-up time

    return Version(text)


def holds(cap: Capability, version: str | None) -> bool:
    """Whether ``cap`` holds for ``version`` (every row holds when no version is known)."""
    if version is None or not (cap.since or cap.until):
        return True
    v = _release(version)
    if cap.since and v < _release(cap.since):
        return False
    return not (cap.until and v >= _release(cap.until))


def ranges(rows: Iterable[Capability]) -> list[tuple[str | None, str | None, str]]:
    """The version ranges the rows' bounds cut the line into, newest first, as ``(lowest, first excluded, a
    version in it)``: ``[("0.10.2", None, "0.10.2"), ("0.9", "0.10.2", "0.9"), (None, "0.9", "0")]``
    for rows bounded at 0.9 and 0.10.2."""
    cuts = [str(v) for v in sorted({_release(b) for c in rows for b in (c.since, c.until) if b}, reverse=True)]
    if not cuts:
        return []
    out: list[tuple[str | None, str | None, str]] = [(cuts[0], None, cuts[0])]
    out += [(lo, hi, lo) for hi, lo in pairwise(cuts)]
    out.append((None, cuts[-1], "0"))
    return out


def specifier(lo: str | None, hi: str | None) -> str:
    """``>=0.9,<0.10.2`` (PEP 440 specifier form); ``any`` for an unbounded range."""
    return ",".join(x for x in (f">={lo}" if lo else "", f"<{hi}" if hi else "") if x) or "any"
