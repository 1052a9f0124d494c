"""The ``local`` executor: every unit runs on this machine, one after another, in a worker thread of this
process (so that the live view keeps moving). What ``bench`` and ``verify`` always did; Ray is never imported."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from quantmatch.sdk import Register, hookimpl
from quantmatch.sdk.executor import NODE_ID_LABEL, Executor, FleetNode, Outcome, UnitFn, selector_matches

__all__ = ["LocalExecutor"]

LOCAL_NODE = "local"


class LocalExecutor(Executor):
    """Runs each unit here, in submission order (see the module docstring)."""

    name = "local"
    description = "this machine, one unit after another (the default; Ray is never imported)"
    shares_filesystem = True
    remote = False

    def __init__(self, address: str | None = None, labels: Mapping[str, str] | None = None) -> None:
        super().__init__(address)
        self.labels = {**(labels or {}), NODE_ID_LABEL: LOCAL_NODE}
        self._pool: ThreadPoolExecutor | None = None

    def connect(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quantmatch-unit")

    def nodes(self) -> list[FleetNode]:
        return [FleetNode(LOCAL_NODE, socket.gethostname(), "local", True, dict(self.labels),
                          float(os.cpu_count() or 1), head=True)]

    def submit(self, fn: UnitFn, payload: dict[str, Any], selector: Mapping[str, str] | None, name: str) -> Any:
        if self._pool is None:
            self.connect()
        assert self._pool is not None
        if selector and not selector_matches(selector, self.labels):
            done: Future[Any] = Future()
            done.set_exception(LookupError(f"this machine does not match {dict(selector)}"))
            return done
        return self._pool.submit(fn, payload)

    def wait(self, handles: Sequence[Any], timeout: float) -> list[Any]:
        if not handles:
            return []
        done, _ = wait(list(handles), timeout=timeout, return_when="FIRST_COMPLETED")
        return [h for h in handles if h in done]

    def outcome(self, handle: Any) -> Outcome:
        if handle.cancelled():
            return Outcome(False, error="cancelled", node=LOCAL_NODE)
        err = handle.exception()
        if err is not None:
            return Outcome(False, error=f"{type(err).__name__}: {err}", node=LOCAL_NODE)
        return Outcome(True, value=handle.result(), node=LOCAL_NODE)

    def cancel(self, handles: Sequence[Any]) -> None:
        for h in handles:
            h.cancel()  # a unit already running finishes its current subprocess, which Ctrl-C also reached

    def running_on(self, handle: Any) -> str | None:
        return LOCAL_NODE if handle.running() else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


@hookimpl
def register_executors(register: Register[type[Executor]]) -> None:
    register(LocalExecutor)
