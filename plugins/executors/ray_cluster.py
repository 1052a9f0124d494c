"""The ``ray`` executor: units run on a Ray cluster, each on a node whose labels match its selector.

- ``connect`` joins the cluster at ``--address`` (``auto``: the one this machine is part of) with Ray's token
  authentication on (``RAY_AUTH_MODE=token`` unless the user set it), and a loopback address stays loopback.
- A unit is a Ray task with ``label_selector`` (Ray >= 2.49), one CPU, and one retry: when its node dies, Ray
  runs it again on another node with the same labels; when there is none, it would stay pending, and the caller
  records it as lost (:meth:`Executor.nodes` shows no alive node that matches).
- Each task tells a small actor on the driver's node when it starts and where, so the live view shows which node
  runs what.
- ``start_node``/``stop_node`` run ``ray start --block`` in a new session and stop that session by its process
  id: first SIGTERM, then SIGKILL for what is left, never ``ray stop`` (which stops every Ray process of the user).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from quantmatch.sdk import Register, hookimpl
from quantmatch.sdk.errors import InputError
from quantmatch.sdk.executor import Executor, FleetNode, NodeProcess, Outcome, UnitFn

__all__ = ["RayExecutor"]

START_TIMEOUT = 90.0
STOP_GRACE = 5.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _ray_env() -> dict[str, str]:
    """The environment Ray runs with: token authentication on and no usage reporting, unless the user chose."""
    env = dict(os.environ)
    env.setdefault("RAY_AUTH_MODE", "token")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


def _token_path(env: Mapping[str, str]) -> Path:
    return Path(env["RAY_AUTH_TOKEN_PATH"]) if env.get("RAY_AUTH_TOKEN_PATH") else Path.home() / ".ray" / "auth_token"


def ensure_token(env: Mapping[str, str], head: bool) -> str:
    """Make sure a node started with token authentication has Ray's token: a head writes a new one where Ray
    looks for it (``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, mode 0600) when there is none; a worker
    without one is refused, naming the fix. What was done, in words (empty: nothing to do)."""
    if env.get("RAY_AUTH_MODE", "").lower() != "token" or env.get("RAY_AUTH_TOKEN"):
        return ""
    path = _token_path(env)
    if path.is_file():
        return ""
    if not head:
        raise InputError(f"this node needs the fleet's Ray token and {path} does not exist: copy that file from the "
                         "head's machine (or set RAY_AUTH_TOKEN), then run the command again")
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))  # what `ray get-auth-token --generate` writes: 256 random bits
    return f"wrote a new Ray token to {path}: copy it to every machine that joins"


def _host(address: str) -> str:
    return address.rsplit(":", 1)[0].strip("[]") if ":" in address else address


class RayExecutor(Executor):
    """See the module docstring."""

    name = "ray"
    description = "a Ray cluster: each unit on a node whose quantmatch labels match (quantmatch fleet start)"
    requires = ("ray",)
    install = "pip install 'quantmatch[fleet]'"
    shares_filesystem = False
    remote = True

    def __init__(self, address: str | None = None, labels: Mapping[str, str] | None = None) -> None:
        super().__init__(address or "auto")
        self._board: Any = None
        self._remote: Any = None
        self._started: dict[str, str] = {}
        self._tokens: dict[str, str] = {}
        self._polled = 0.0

    # -- connecting --
    def connect(self) -> None:
        self.check()
        imported = "ray" in sys.modules
        for k, v in _ray_env().items():
            os.environ.setdefault(k, v)
        if imported and os.environ.get("RAY_AUTH_MODE") == "token":  # Ray read its config before we set the mode
            with contextlib.suppress(Exception):
                from ray._raylet import Config  # type: ignore[attr-defined]

                Config.initialize("")
        addr = str(self.address)
        from quantmatch.plugins.executors._ray_start import keep_loopback

        keep_loopback()  # a loopback head (also one found by "auto") is reached on loopback
        import ray

        try:
            ray.init(address=addr, logging_level=logging.ERROR, log_to_driver=False, configure_logging=False,
                     namespace="quantmatch")
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise InputError(f"cannot join a Ray cluster at {addr}: {e}\nStart one with `quantmatch fleet start "
                             "--head` (this machine) or pass --address HOST:PORT of a running head") from e
        self._remote = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=False)(_run_unit)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        self._board = ray.remote(num_cpus=0)(_Board).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True)).remote()

    def nodes(self) -> list[FleetNode]:
        import ray

        out = []
        for n in ray.nodes():  # type: ignore[no-untyped-call]
            res = n.get("Resources") or {}
            out.append(FleetNode(n["NodeID"], n.get("NodeName") or n.get("NodeManagerAddress", ""),
                                 n.get("NodeManagerAddress", ""), bool(n.get("Alive")), dict(n.get("Labels") or {}),
                                 float(res.get("CPU", 0.0)), "node:__internal_head__" in res))
        return out

    # -- units --
    def submit(self, fn: UnitFn, payload: dict[str, Any], selector: Mapping[str, str] | None, name: str) -> Any:
        options: dict[str, Any] = {"name": name}
        if selector:
            options["label_selector"] = dict(selector)
        import uuid

        token = uuid.uuid4().hex
        ref = self._remote.options(**options).remote(fn, payload, self._board, token)
        self._tokens[ref.hex()] = token
        return ref

    def wait(self, handles: Sequence[Any], timeout: float) -> list[Any]:
        import ray

        if not handles:
            return []
        ready, _ = ray.wait(list(handles), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(list(handles), num_returns=len(handles), timeout=0)
        return list(ready)

    def outcome(self, handle: Any) -> Outcome:
        import ray
        from ray import exceptions as rex

        try:
            got = ray.get(handle)
        except rex.TaskCancelledError:
            return Outcome(False, error="cancelled")
        except (rex.NodeDiedError, rex.ObjectLostError, rex.OwnerDiedError) as e:
            return Outcome(False, error=f"its node died: {type(e).__name__}", lost=True)
        except rex.WorkerCrashedError as e:
            return Outcome(False, error=f"the Ray worker running it crashed twice: {str(e)[:300]}")
        except rex.RayTaskError as e:
            cause = e.cause if getattr(e, "cause", None) is not None else e
            return Outcome(False, error=f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1][:600]}")
        except rex.RayError as e:
            return Outcome(False, error=f"{type(e).__name__}: {str(e)[:600]}", lost=True)
        return Outcome(True, value=got["value"], node=got["node"])

    def cancel(self, handles: Sequence[Any]) -> None:
        import ray

        for h in handles:
            with contextlib.suppress(Exception):  # already finished, or its node is gone
                ray.cancel(h, force=True)

    def share(self, blob: bytes) -> Any:
        import ray

        return ray.put(blob)

    def running_on(self, handle: Any) -> str | None:
        import ray

        if time.monotonic() - self._polled > 0.5 and self._board is not None:
            with contextlib.suppress(Exception):
                self._started = ray.get(self._board.snapshot.remote(), timeout=2)
            self._polled = time.monotonic()
        return self._started.get(self._tokens.get(handle.hex(), ""))

    def close(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()

    # -- nodes of this machine --
    @classmethod
    def start_node(cls, *, head: bool, address: str | None, port: int | None, labels: Mapping[str, str],
                   num_cpus: int | None, state_dir: str, node_ip: str | None = None) -> NodeProcess:
        import subprocess

        cls().check()
        if head == bool(address):
            raise InputError("say which node to start: --head, or --address HOST:PORT of a running head")
        env = _ray_env()
        note = ensure_token(env, head)
        ip = node_ip or ("127.0.0.1" if head or _host(str(address)) in LOOPBACK else None)
        args = ["start", "--block", "--disable-usage-stats"]
        if head:
            args += ["--head", "--port", str(port or 6379), "--include-dashboard", "false"]
        else:
            args += ["--address", str(address)]
        if ip:
            args += ["--node-ip-address", ip]
        if num_cpus is not None:
            args += ["--num-cpus", str(num_cpus)]
        args += ["--labels", ",".join(f"{k}={v}" for k, v in labels.items())]
        state = Path(state_dir)
        state.mkdir(parents=True, exist_ok=True)
        log = state / f"ray-node-{int(time.time() * 1000)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "quantmatch.plugins.executors._ray_start", *args],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
        end = time.monotonic() + START_TIMEOUT
        while time.monotonic() < end:
            text = log.read_text(errors="replace")
            if "block forever" in text or ("Ray runtime started" in text and "--block" in text):
                break
            if proc.poll() is not None:
                tail = "\n".join(text.strip().splitlines()[-8:])
                raise InputError(f"ray start failed (exit {proc.returncode}):\n{tail}\nlog: {log}")
            time.sleep(0.3)
        else:
            _kill_session(proc.pid)
            raise InputError(f"the Ray node did not start in {START_TIMEOUT:.0f} s; log: {log}")
        where = f"{ip or 'this machine'}:{port or 6379}" if head else str(address)
        return NodeProcess(cls.name, proc.pid, where, head, dict(labels), str(log), note)

    @classmethod
    def stop_node(cls, node: NodeProcess) -> str:
        left = _kill_session(node.pid)
        return f"stopped the Ray {'head' if node.head else 'worker'} node (process group {node.pid})" + (
            f"; {left} processes needed SIGKILL" if left else "")


def _session_pids(pid: int) -> list[int]:
    """Live processes of the session ``pid`` leads (``ray start`` and everything it started; zombies left out)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == pid and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                out.append(int(entry.name))
        except (ProcessLookupError, PermissionError, OSError, IndexError):
            continue
    return out


def _kill_session(pid: int) -> int:
    """SIGTERM to the session, then SIGKILL to what is left after :data:`STOP_GRACE` s: how many needed it."""
    for p in _session_pids(pid) or [pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    end = time.monotonic() + STOP_GRACE
    while time.monotonic() < end and _session_pids(pid):
        time.sleep(0.2)
    left = _session_pids(pid)
    for p in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    end = time.monotonic() + STOP_GRACE
    while time.monotonic() < end and _session_pids(pid):
        time.sleep(0.1)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return len(left)


class _Board:
    """Which unit started on which node (the live view's ``running``)."""

    def __init__(self) -> None:
        self.started: dict[str, str] = {}

    def start(self, task: str, node: str) -> None:
        self.started[task] = node

    def snapshot(self) -> dict[str, str]:
        return dict(self.started)


def _run_unit(fn: UnitFn, payload: dict[str, Any], board: Any, token: str) -> dict[str, Any]:
    import ray

    node = ray.get_runtime_context().get_node_id()
    payload = {k: ray.get(v) if isinstance(v, ray.ObjectRef) else v for k, v in payload.items()}
    with contextlib.suppress(Exception):  # the live view is a nicety; the unit runs without it
        board.start.remote(token, node)
    return {"value": fn(payload), "node": node}


@hookimpl
def register_executors(register: Register[type[Executor]]) -> None:
    register(RayExecutor)
