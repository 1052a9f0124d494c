"""Sweeps through the executor contract on this machine: routing by the registry, idempotent units, faults,
per-node evidence; the ``local`` executor never imports Ray. (A real Ray cluster: ``tests/test_fleet_ray.py``.)"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from quantmatch.cli.main import main
from quantmatch.measure.bench import Bench, Combo
from quantmatch.measure.fleet import run_sweep
from quantmatch.plugins.executors.local import LocalExecutor
from quantmatch.registry import Registry
from quantmatch.sdk.errors import InputError, UnknownChoiceError
from quantmatch.sdk.executor import (
    DEVICE_LABEL,
    Executor,
    FleetNode,
    Outcome,
    UnitFn,
    node_labels,
    parse_labels,
    selector_matches,
)
from quantmatch.sdk.pluginhost import get_host
from quantmatch.sdk.store import EvidenceRow, ResultsStore, disagreeing_nodes, read_evidence
from quantmatch.sdk.verdict import Evidence

pytest.importorskip("torch")

SETTINGS = {"config": {"tokens": 128, "window": 64, "prompt": 8, "new_tokens": 4, "batch": 2, "repeats": 1,
                       "warmup": 1}, "threads": 1, "timeout": 600, "budget": None}
VLLM_FP8 = "rtn:w4a4-nvfp4:vllm"  # NVFP4 in vLLM: GPUs only, no node of a CPU fleet runs it


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QUANTMATCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("QUANTMATCH_RESULTS_DB", str(tmp_path / "results.sqlite"))
    return tmp_path


def local_labels() -> dict[str, str]:
    reg = Registry()
    return node_labels(reg.local(), {DEVICE_LABEL: reg.device_label(reg.local()), "node": "here"})


def test_labels_and_selectors() -> None:
    reg = Registry()
    labels = local_labels()
    here = reg.local()
    assert labels[DEVICE_LABEL] == reg.device_label(here) == "intel_sapphire_rapids" or \
        labels[DEVICE_LABEL] == reg.device_label(here)
    assert labels["quantmatch/family"] == here.family and labels["quantmatch/node"] == "here"
    assert all(labels[f"quantmatch/{f}"] == "1" for f in here.cpu_features if f"quantmatch/{f}" in labels)
    assert selector_matches({DEVICE_LABEL: labels[DEVICE_LABEL]}, labels)
    assert selector_matches({DEVICE_LABEL: f"in(h100,{labels[DEVICE_LABEL]})"}, labels)
    assert not selector_matches({DEVICE_LABEL: "h100"}, labels)
    assert not selector_matches({DEVICE_LABEL: f"!{labels[DEVICE_LABEL]}"}, labels)
    assert selector_matches({DEVICE_LABEL: "!in(h100,a100)"}, labels)
    assert parse_labels(["device=h100", "team/x=y"]) == {DEVICE_LABEL: "h100", "team/x": "y"}
    with pytest.raises(InputError, match="KEY=VALUE"):
        parse_labels(["device"])
    # a detected CPU is labelled with the catalog device of its family and architecture, when there is one
    match = reg.catalog_match(here)
    assert reg.device_label(here) == (match.id if match else labels[DEVICE_LABEL])


def test_executors_are_plugins_with_clear_errors() -> None:
    host = get_host()
    assert {"local", "ray"} <= set(host.executors)
    assert host.executors["ray"].provenance.plugin == "quantmatch.plugins.executors.ray_cluster"
    with pytest.raises(UnknownChoiceError, match="Valid executors: local, ray"):
        host.executor_class("dask")
    ray_cls = host.executor_class("ray")
    assert ray_cls.install == "pip install 'quantmatch[fleet]'" and ray_cls.requires == ("ray",)


class Done:
    """A finished unit's handle (handles must be hashable)."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


class InlineExecutor(Executor):
    """A third party's executor: runs each unit at once, in this process, on two pretend nodes that both carry
    this machine's labels, alternating (to show that rows name the node the executor says ran them). A third node,
    an H100 head that offers no CPU to units, must be no device of the fleet."""

    name = "inline"
    description = "test executor: runs units in the calling thread"
    shares_filesystem = True
    remote = False

    def __init__(self, address: str | None = None, labels: Mapping[str, str] | None = None) -> None:
        super().__init__(address)
        self.labels = dict(labels or {})
        self.count = 0

    def connect(self) -> None:
        pass

    def nodes(self) -> list[FleetNode]:
        return [FleetNode(f"n{i}", f"inline-{i}", "here", True, {**self.labels, "quantmatch/node": f"inline-{i}",
                                                                 "ray.io/node-id": f"n{i}"}, cpus=1) for i in (0, 1)
                ] + [FleetNode("n2", "gpu-head", "here", True, {DEVICE_LABEL: "nvidia_h100_sxm"}, cpus=0, head=True)]

    def submit(self, fn: UnitFn, payload: dict[str, Any], selector: Mapping[str, str] | None, name: str) -> Any:
        node = f"n{self.count % 2}"
        self.count += 1
        try:
            return Done(Outcome(True, value=fn(payload), node=node))
        except Exception as e:
            return Done(Outcome(False, error=f"{type(e).__name__}: {e}", node=node))

    def wait(self, handles: Sequence[Any], timeout: float) -> list[Any]:
        return list(handles)

    def outcome(self, handle: Any) -> Outcome:
        return handle.outcome  # type: ignore[no-any-return]

    def cancel(self, handles: Sequence[Any]) -> None:
        pass


@pytest.mark.hook("register_executors")
def test_a_third_party_executor_runs_a_sweep(quantmatch_plugin: Any, tiny_llama_dir: Path, isolated: Path) -> None:
    host = quantmatch_plugin(InlineExecutor, "inline-executor")
    assert host.executors["inline"].provenance.plugin == "inline-executor"
    ex = host.executor_class("inline")(labels=local_labels())  # type: ignore[call-arg]
    report = run_sweep([str(tiny_llama_dir)], ["rtn:w8a16:torch", VLLM_FP8], ex, settings=SETTINGS)
    by = {r.combo: r for r in report.rows}
    assert by["none:fp32:torch"].status == by["rtn:w8a16:torch"].status == "ok", [r.reason for r in report.rows]
    # every runnable combination ran on the one fleet device; each row names the node the executor reported
    assert {by["none:fp32:torch"].node, by["rtn:w8a16:torch"].node} <= {"inline-0", "inline-1"}
    assert by["rtn:w8a16:torch"].device == local_labels()[DEVICE_LABEL]
    # the H100 head takes no units, so nothing is routed to it: FP8 in vLLM stays unverified
    assert by[VLLM_FP8].status == "unverified" and by[VLLM_FP8].reason.startswith("no node with a device that runs")
    assert "nvidia" in by[VLLM_FP8].reason and not by[VLLM_FP8].node
    assert report.exit_code == 0  # unverified is an answer, not an error


def test_local_sweep_is_idempotent_never_imports_ray_and_survives_failures(tiny_llama_dir: Path, isolated: Path
                                                                          ) -> None:
    """The CLI in a fresh process: a unit that fails does not stop the sweep; the second run skips stored units,
    ``--rerun`` runs them again; Ray is never imported."""
    from quantmatch.sdk.artifact import Manifest, write_manifest

    combos = "rtn:w8a16:torch,gguf:gguf-q8_0:llama.cpp," + VLLM_FP8
    if Bench(str(tiny_llama_dir), save=False).runner_class("llama.cpp").missing():  # type: ignore[union-attr]
        pytest.skip("llama-cpp-python not installed")
    # a corrupt artifact where the gguf unit will look for it: that unit fails, the sweep goes on
    bench = Bench(str(tiny_llama_dir), save=False)
    art = bench.artifact_dir(Combo("gguf", "gguf-q8_0", "llama.cpp"))
    art.mkdir(parents=True)
    (art / "model.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 8)
    write_manifest(art, Manifest("gguf", "gguf-q8_0", "gguf", str(tiny_llama_dir)))
    script = (
        "import json, sys\n"
        "from quantmatch.cli.main import main\n"
        "code = main(sys.argv[1:])\n"
        "assert 'ray' not in sys.modules, 'the local executor imported ray'\n"
        "sys.exit(code)\n")
    args = ["sweep", str(tiny_llama_dir), "--combos", combos, "--tokens", "128", "--window", "64", "--prompt", "8",
            "--new-tokens", "4", "--batch", "2", "--threads", "1", "--json"]

    def sweep(*extra: str) -> tuple[int, dict[str, Any]]:
        proc = subprocess.run([sys.executable, "-c", script, *args, *extra], capture_output=True, text=True,
                              env=os.environ.copy(), timeout=900)
        assert proc.stdout, proc.stderr
        return proc.returncode, json.loads(proc.stdout)["sweep"]

    code, first = sweep()
    by = {u["combo"]: u for u in first["units"]}
    assert code == 1 and first["summary"]["failed"] == 1  # the corrupt artifact
    assert "cannot load this GGUF file" in by["gguf:gguf-q8_0:llama.cpp"]["reason"]
    assert by["rtn:w8a16:torch"]["status"] == "ok" and by["none:fp32:torch"]["status"] == "ok"
    assert by["rtn:w8a16:torch"]["made_here"] and by["rtn:w8a16:torch"]["node"]
    assert by[VLLM_FP8]["status"] == "unverified"
    assert by["rtn:w8a16:torch"]["ratios"]["decode_tps"] > 0
    code, second = sweep()
    by2 = {u["combo"]: u for u in second["units"]}
    assert by2["rtn:w8a16:torch"]["status"] == by2["none:fp32:torch"]["status"] == "stored"
    assert by2["gguf:gguf-q8_0:llama.cpp"]["status"] == "failed"  # failures are run again
    assert by2["rtn:w8a16:torch"]["key"] == by["rtn:w8a16:torch"]["key"]
    _, third = sweep("--rerun", "--combos", "rtn:w8a16:torch")
    assert {u["combo"]: u["status"] for u in third["units"]} == {"none:fp32:torch": "ok", "rtn:w8a16:torch": "ok"}
    con = sqlite3.connect(isolated / "results.sqlite")
    units = con.execute("SELECT method, scheme, backend, status, node FROM units").fetchall()
    evidence = con.execute("SELECT node FROM evidence WHERE kind = 'bench' AND method = 'rtn'").fetchall()
    con.close()
    assert sorted(u[:4] for u in units) == [("none", "fp32", "torch", "ok"), ("rtn", "w8a16", "torch", "ok")]
    assert evidence and all(n for (n,) in evidence)


def test_evidence_per_node_and_disagreement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    monkeypatch.setenv("QUANTMATCH_RESULTS_DB", str(db))
    # a store written before fleets (no node column) still loads and is upgraded on the next write
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE evidence (method TEXT, scheme TEXT, backend TEXT, device TEXT, kind TEXT, figure TEXT,"
                " date TEXT, versions TEXT, agrees INTEGER, claimed TEXT, observed TEXT)")
    con.execute("INSERT INTO evidence VALUES ('rtn', 'w8a16', 'torch', 'amd_zen4_genoa', 'verify', 'old', "
                "'2026-01-01', '', 1, 'weight-only', 'weight-only')")
    con.commit()
    con.close()
    assert read_evidence("amd_zen4_genoa", db)[("rtn", "w8a16", "torch")][0].figure == "old"
    st = ResultsStore(db)
    for node, seen, date in (("box-a", "weight-only", "2026-12-01"), ("box-b", "native", "2026-12-02")):
        st.add_evidence([EvidenceRow("rtn", "w8a16", "torch", "amd_zen4_genoa",
                                     Evidence("verify", f"measured {seen}", date, "torch 2.13", seen == "weight-only",
                                              node=node, observed=seen), "weight-only", seen)])
    found = read_evidence("amd_zen4_genoa", db)[("rtn", "w8a16", "torch")]
    assert {e.node for e in found} == {"box-a", "box-b", ""}  # the newest row of each node
    assert disagreeing_nodes(found) == [("box-a", "weight-only"), ("box-b", "native"), ("this machine",
                                                                                        "weight-only")]
    v = Registry().verdict("rtn", "w8a16", "torch", "amd_zen4_genoa")
    assert {e.node for e in v.evidence} == {"box-a", "box-b", ""}  # a catalog device gets its fleet's evidence
    assert main(["explain", "rtn", "w8a16", "torch", "amd_zen4_genoa"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "box-b): verify: measured native" in out
    assert "machines of this device disagree: box-a observed weight-only; box-b observed native" in out


def test_cli_refusals(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["bench", "smollm2-135m", "--combos", "rtn:w8a16:torch", "--artifact-store", str(tmp_path)]) == 2
    assert "add --executor NAME" in capsys.readouterr().err
    assert main(["sweep", "smollm2-135m", "--combos", "rtn:w8a16:torch", "--executor", "dask"]) == 2
    assert "unknown executor 'dask'" in capsys.readouterr().err
    assert main(["sweep", "smollm2-135m", "--combos", "rtn:w8a16:torch", "--executor", "local", "--address",
                 "1.2.3.4:1"]) == 2
    assert "runs here" in capsys.readouterr().err
    assert main(["fleet"]) == 2
    assert "fleet start|stop|nodes|labels" in capsys.readouterr().err
    assert main(["fleet", "start", "--executor", "local", "--head"]) == 2
    assert "does not start nodes" in capsys.readouterr().err


def test_fleet_labels_for_a_cluster_started_otherwise(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleet", "labels", "--label", "node=gpu-box-3", "--format", "json"]) == 0
    labels = json.loads(capsys.readouterr().out)
    assert labels == local_labels() | {"quantmatch/node": "gpu-box-3"}
    assert main(["fleet", "labels"]) == 0
    assert f"{DEVICE_LABEL}={labels[DEVICE_LABEL]}," in capsys.readouterr().out


def test_local_executor_contract() -> None:
    ex = LocalExecutor(labels={DEVICE_LABEL: "x"})
    ex.connect()
    try:
        ok = ex.submit(dict, {"a": 1}, {DEVICE_LABEL: "x"}, "u1")
        wrong = ex.submit(dict, {}, {DEVICE_LABEL: "h100"}, "u2")
        assert ex.wait([ok, wrong], 30) and ex.outcome(ok) == Outcome(True, {"a": 1}, node="local")
        assert not ex.outcome(wrong).ok and "does not match" in ex.outcome(wrong).error
        assert [n.device for n in ex.nodes()] == ["x"]
    finally:
        ex.close()


def test_ray_token_stays_on(tmp_path: Path) -> None:
    from quantmatch.plugins.executors.ray_cluster import ensure_token

    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "ray" / "token")}
    with pytest.raises(InputError, match="copy that file from the head"):
        ensure_token(env, head=False)  # a worker never makes up a token of its own
    assert "wrote a new Ray token" in ensure_token(env, head=True)
    token = (tmp_path / "ray" / "token").read_text()
    assert len(token) == 64 and (tmp_path / "ray" / "token").stat().st_mode & 0o777 == 0o600
    assert ensure_token(env, head=True) == "" and (tmp_path / "ray" / "token").read_text() == token  # kept
    assert ensure_token({**env, "RAY_AUTH_MODE": "disabled"}, head=False) == ""  # the user opted out


def test_artifacts_move_once_through_the_store_or_the_executor(tiny_llama_dir: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A node that made an artifact publishes it to --artifact-store; a node with an empty cache takes it from there
    instead of quantizing; without a store, the bytes the executor carries are unpacked the same way."""
    from quantmatch.measure.fleet import _bring_artifact, _pack

    monkeypatch.setenv("QUANTMATCH_RESULTS_DB", str(tmp_path / "results.sqlite"))
    store = tmp_path / "shared"
    monkeypatch.setenv("QUANTMATCH_CACHE_DIR", str(tmp_path / "node-a"))
    first = run_sweep([str(tiny_llama_dir)], ["rtn:w8a16:torch"], LocalExecutor(labels=local_labels()),
                      settings=SETTINGS, artifact_store=store, save=False)
    made = next(r for r in first.rows if r.combo == "rtn:w8a16:torch")
    assert made.status == "ok" and made.made_here, made.reason
    rel = Bench(str(tiny_llama_dir), save=False).artifact_dir(Combo("rtn", "w8a16", "torch")).relative_to(
        tmp_path / "node-a" / "bench-artifacts")
    assert (store / rel / "quantmatch.json").is_file()
    assert not list(store.rglob("*.tmp"))  # published through a temporary name and a rename
    monkeypatch.setenv("QUANTMATCH_CACHE_DIR", str(tmp_path / "node-b"))  # another node: an empty cache
    second = run_sweep([str(tiny_llama_dir)], ["rtn:w8a16:torch"], LocalExecutor(labels=local_labels()),
                       settings=SETTINGS, artifact_store=store, save=False)
    used = next(r for r in second.rows if r.combo == "rtn:w8a16:torch")
    assert used.status == "ok" and not used.made_here and used.artifact_from == "artifact store"
    assert used.result and used.result["run"]["perplexity"] == pytest.approx(made.result["run"]["perplexity"])
    # no store: the producer's bytes travel with the unit and are unpacked into the node's cache
    out: dict[str, Any] = {}
    target = tmp_path / "node-c" / rel
    _bring_artifact({"artifact": str(rel), "artifact_blob": _pack(store / rel)}, target, out)
    assert out["artifact_from"] == "sent by the executor"
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in (store / rel).iterdir())


def test_all_runnable_plans_what_bench_plans_on_each_fleet_device(tiny_llama_dir: Path) -> None:
    from quantmatch.measure.fleet import plan_sweep

    reg = Registry()
    ex = LocalExecutor(labels=local_labels())
    ex.connect()
    try:
        plan = plan_sweep([str(tiny_llama_dir)], [], ex, all_runnable=True, registry=reg)
    finally:
        ex.close()
    combos = [u.combo for u in plan.units]
    assert combos[0] == "none:fp32:torch" and "none:bf16:torch" in combos  # the runners' float baselines
    bench_run, _ = Bench(str(tiny_llama_dir), registry=reg, save=False).plan(all_runnable=True)
    assert set(combos) >= {r.combo.key for r in bench_run}  # everything bench --all-runnable would run here
    assert len(set(u.key for u in plan.units)) == len(plan.units)  # one key per unit
    assert all(u.selector == {DEVICE_LABEL: local_labels()[DEVICE_LABEL]} for u in plan.units)
