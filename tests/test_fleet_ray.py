"""A real Ray cluster on this machine: a head and workers started with ``quantmatch fleet start`` on loopback,
labelled as different devices; units land on the node whose label matches, absent hardware is unverified, a
killed worker's units are recorded as lost, Ctrl-C cancels, a second run skips what is stored, and every node
verifies its own claims. The nodes are stopped by process id (``quantmatch fleet stop``), never ``ray stop``."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("ray") is None:  # not imported here: the executor sets Ray's auth mode before it does
    pytest.skip("ray is not installed (pip install 'quantmatch[fleet]')", allow_module_level=True)
pytest.importorskip("torch")

import contextlib

from quantmatch.measure.fleet import run_sweep, verify_fleet
from quantmatch.plugins.executors.ray_cluster import RayExecutor
from quantmatch.plugins.executors.ray_cluster import _session_pids as session_pids
from quantmatch.registry import Registry
from quantmatch.sdk.store import read_evidence

pytestmark = [pytest.mark.slow]

SETTINGS = {"config": {"tokens": 128, "window": 64, "prompt": 8, "new_tokens": 4, "batch": 2, "repeats": 1,
                       "warmup": 1}, "threads": 1, "timeout": 600, "budget": None}
WORKER_DEVICE = "amd_zen4_genoa"
DOOMED_DEVICE = "amd_zen3_milan"
VLLM_FP8 = "rtn:w4a4-nvfp4:vllm"  # GPUs only


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def quantmatch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "import sys; from quantmatch.cli import main; sys.exit(main())",
                           *args], capture_output=True, text=True, env=env, timeout=180)


class Fleet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # the token lives with the test, not in ~/.ray: the head writes it there, the driver reads it there
        self.env = {**os.environ, "QUANTMATCH_CACHE_DIR": str(root / "cache"),
                    "QUANTMATCH_RESULTS_DB": str(root / "results.sqlite"), "RAY_AUTH_TOKEN_PATH": str(root / "token")}
        self.nodes: dict[str, dict[str, Any]] = {}

    def start(self, name: str, *args: str) -> dict[str, Any]:
        where = ["--head", "--port", str(self.port)] if not self.nodes else ["--address", self.address]
        proc = quantmatch("fleet", "start", *where, "--num-cpus", "1", "--label", f"node={name}", *args, "--json",
                          env=self.env)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        node = json.loads(proc.stdout)["node"]
        self.nodes[name] = node
        return node  # type: ignore[no-any-return]

    def kill(self, name: str) -> None:
        """The machine dies: every process of the node, at once."""
        for pid in session_pids(self.nodes[name]["pid"]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = Fleet(tmp_path_factory.mktemp("fleet"))
    with pytest.MonkeyPatch.context() as mp:
        for k in ("QUANTMATCH_CACHE_DIR", "QUANTMATCH_RESULTS_DB", "RAY_AUTH_TOKEN_PATH"):
            mp.setenv(k, f.env[k])
        mp.delenv("RAY_AUTH_TOKEN", raising=False)
        try:
            head = f.start("head")
            assert "wrote a new Ray token" in head["note"] and (f.root / "token").stat().st_mode & 0o077 == 0
            f.start("worker", "--label", f"device={WORKER_DEVICE}")
            yield f
        finally:
            leaders = [n["pid"] for n in f.nodes.values()]
            proc = quantmatch("fleet", "stop", env=f.env)
            assert proc.returncode == 0, proc.stderr
            end = time.monotonic() + 15
            while time.monotonic() < end and any(session_pids(leader) for leader in leaders):
                time.sleep(0.2)
            left = [p for leader in leaders for p in session_pids(leader)]
            assert not left, f"processes of the test's Ray nodes still running: {left}"


def node_ids(executor: RayExecutor) -> dict[str, str]:
    executor.connect()
    try:
        return {n.labels["quantmatch/node"]: n.id for n in executor.nodes() if n.alive}
    finally:
        executor.close()


def test_nodes_are_labelled_and_listen_on_loopback_only(fleet: Fleet) -> None:
    import psutil

    proc = quantmatch("fleet", "nodes", "--address", fleet.address, "--json", env=fleet.env)
    assert proc.returncode == 0, proc.stderr
    nodes = {n["labels"]["quantmatch/node"]: n for n in json.loads(proc.stdout)["nodes"]}
    here = Registry()
    assert nodes["head"]["device"] == here.device_label(here.local()) and nodes["head"]["head"]
    assert nodes["worker"]["device"] == WORKER_DEVICE and nodes["worker"]["alive"]
    assert nodes["worker"]["labels"]["quantmatch/family"] == here.local().family
    pids = {p for n in fleet.nodes.values() for p in session_pids(n["pid"])}
    listening = [c.laddr.ip for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert listening and all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for ip in listening), listening


def test_units_land_on_matching_nodes_and_a_second_run_skips_them(fleet: Fleet, tiny_llama_dir: Path) -> None:
    ids = node_ids(RayExecutor(fleet.address))
    report = run_sweep([str(tiny_llama_dir)], ["rtn:w8a16:torch", VLLM_FP8], RayExecutor(fleet.address),
                       settings=SETTINGS)
    rows = [r for r in report.rows if r.status != "unverified"]
    assert sorted((r.combo, r.device, r.status) for r in rows) == sorted(
        (c, d, "ok") for c in ("none:fp32:torch", "rtn:w8a16:torch")
        for d in (Registry().device_label(Registry().local()), WORKER_DEVICE)), [r.reason for r in rows]
    for r in rows:  # each unit ran on the node whose device label it was routed to
        assert r.node_id == ids["worker" if r.device == WORKER_DEVICE else "head"], (r.combo, r.device, r.node)
        assert r.node == ("worker" if r.device == WORKER_DEVICE else "head")
        assert r.profile and r.profile["family"] == "x86-cpu"  # what the node itself detected
    rtn = [r for r in rows if r.combo == "rtn:w8a16:torch"]
    assert sum(r.made_here for r in rtn) == 1  # quantized once, the other unit used it
    fp8 = next(r for r in report.rows if r.combo == VLLM_FP8)
    assert fp8.status == "unverified" and "nvidia" in fp8.reason
    again = run_sweep([str(tiny_llama_dir)], ["rtn:w8a16:torch", VLLM_FP8], RayExecutor(fleet.address),
                      settings=SETTINGS)
    assert sorted(r.status for r in again.rows) == ["stored"] * 4 + ["unverified"]


def test_every_node_verifies_its_own_claims(fleet: Fleet) -> None:
    report = verify_fleet(RayExecutor(fleet.address), only=("rtn", "w8a16", "torch"), threads=1)
    by = {n["node"]: n for n in report.nodes}
    assert set(by) == {"head", "worker"} and by["worker"]["device"] == WORKER_DEVICE
    assert all(n["report"]["summary"]["agrees"] + n["report"]["summary"]["drift"] >= 1 for n in by.values())
    found = read_evidence(WORKER_DEVICE)[("rtn", "w8a16", "torch")]
    assert any(e.kind == "verify" and e.node == "worker" and e.observed for e in found)
    v = Registry().verdict("rtn", "w8a16", "torch", WORKER_DEVICE)
    assert any(e.node == "worker" and e.kind == "verify" for e in v.evidence)


def test_ctrl_c_cancels_and_the_next_run_continues(fleet: Fleet, tiny_llama_dir: Path) -> None:
    def interrupt(p: Any) -> None:
        if any(c["running"] for c in p.nodes.values()):
            raise KeyboardInterrupt

    combos = ["rtn:w4a16-g32:torch"]
    report = run_sweep([str(tiny_llama_dir)], combos, RayExecutor(fleet.address), settings=SETTINGS,
                       devices=[WORKER_DEVICE], rerun=True, progress=interrupt)
    assert report.interrupted and report.exit_code == 130
    assert {r.status for r in report.rows} <= {"cancelled", "ok"} and report.count("cancelled") >= 1
    again = run_sweep([str(tiny_llama_dir)], combos, RayExecutor(fleet.address), settings=SETTINGS,
                      devices=[WORKER_DEVICE])
    assert {r.status for r in again.rows} <= {"ok", "stored"} and again.count("ok") >= 1


def test_a_worker_killed_mid_unit_loses_its_units_and_the_sweep_finishes(fleet: Fleet, tiny_llama_dir: Path
                                                                         ) -> None:
    fleet.start("doomed", "--label", f"device={DOOMED_DEVICE}")
    killed: list[float] = []

    def kill_when_running(p: Any) -> None:
        if not killed and p.nodes.get("doomed", {}).get("running"):
            fleet.kill("doomed")
            killed.append(time.monotonic())

    report = run_sweep([str(tiny_llama_dir)], ["rtn:w4a16-g64:torch"], RayExecutor(fleet.address),
                       settings=SETTINGS, devices=[DOOMED_DEVICE], rerun=True, progress=kill_when_running)
    assert killed, "the unit never started on the doomed node"
    assert {r.status for r in report.rows} == {"lost"}, [(r.combo, r.status, r.reason) for r in report.rows]
    assert all(f"quantmatch/device={DOOMED_DEVICE}" in r.reason for r in report.rows)
    assert report.exit_code == 1 and time.monotonic() - killed[0] < 120


def test_a_worker_killed_mid_unit_has_its_unit_retried_on_a_twin(fleet: Fleet, tiny_llama_dir: Path) -> None:
    for name in ("twin-a", "twin-b"):
        fleet.start(name, "--label", "device=amd_zen5_turin")
    killed: list[str] = []

    def kill_one(p: Any) -> None:
        for name in ("twin-a", "twin-b"):
            if not killed and p.nodes.get(name, {}).get("running"):
                fleet.kill(name)
                killed.append(name)

    report = run_sweep([str(tiny_llama_dir)], ["rtn:w4a16-g64:torch"], RayExecutor(fleet.address),
                       settings=SETTINGS, devices=["amd_zen5_turin"], rerun=True, progress=kill_one)
    assert killed, "no unit started on a twin"
    survivor = "twin-b" if killed[0] == "twin-a" else "twin-a"
    assert {r.status for r in report.rows} == {"ok"}, [(r.combo, r.status, r.reason) for r in report.rows]
    assert all(r.node == survivor for r in report.rows)
    assert any(f"retried on {survivor} after {killed[0]} went away" in r.reason for r in report.rows)
