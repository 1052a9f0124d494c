"""Version-aware verdicts: rows bounded by runtime versions, the version a verdict is for, disputed rows."""

from __future__ import annotations

import json

import pytest

from quantmatch.cli.main import main
from quantmatch.registry import Registry
from quantmatch.registry.versions import parse_runtime_versions, ranges
from quantmatch.sdk.backend import Backend
from quantmatch.sdk.capability import Capability, Requires, validate_capability
from quantmatch.sdk.errors import InputError, UnknownChoiceError
from quantmatch.sdk.verdict import Dispute, Level
from quantmatch.testing import registered_plugin

SRC_NEW = "example/rt src/kernels.py @aaaaaaaa"
SRC_OLD = "example/rt src/kernels.py @bbbbbbbb"


class VersionedRuntime(Backend):
    """A runtime whose FP8 kernel arrived in 2.0 and whose INT8 answer is disputed."""

    name = "versioned-rt"
    description = "test runtime with version-bounded rows"
    targets = ("cuda",)
    formats = ("*",)
    runtime = "versioned-rt-dist"
    latest_version = "2.1"
    source = "https://example.invalid/rt"
    capabilities = (
        Capability(Level.NATIVE, "fp8 GEMM kernel", SRC_NEW, weights=("fp8-e4m3",), activations=("fp8-e4m3",),
                   since="2.0", when=Requires(families=frozenset({"nvidia"}))),
        Capability(Level.WEIGHT_ONLY, "fp8 weights upcast to fp16 before 2.0", SRC_OLD, weights=("fp8-e4m3",),
                   activations=("fp8-e4m3",), until="2.0"),
        Capability(Level.NATIVE, "int8 GEMM", SRC_NEW, weights=("int8",), activations=("int8",),
                   disputed=Dispute(Level.EMULATED, "the vendor's forum says int8 falls back to fp16 math",
                                    "https://example.invalid/forum/123")),
    )


@pytest.fixture
def reg() -> Registry:
    with registered_plugin(VersionedRuntime, "versioned-plugin") as host:
        yield Registry(host)


def test_latest_known_version_by_default(reg: Registry) -> None:
    v = reg.verdict(None, "w8a8-fp8", "versioned-rt", "nvidia_h100_sxm")
    assert v.level is Level.NATIVE
    assert v.runtime_version == "versioned-rt-dist 2.1 (latest known)"


def test_asked_version_changes_the_verdict(reg: Registry) -> None:
    old = reg.at_versions({"versioned-rt": "1.9.3"}).verdict(None, "w8a8-fp8", "versioned-rt", "nvidia_h100_sxm")
    assert old.level is Level.WEIGHT_ONLY and old.reasons[0].source == SRC_OLD
    assert old.runtime_version == "versioned-rt-dist 1.9.3 (asked)"
    # the distribution's name works as well as the backend's
    same = reg.at_versions({"versioned-rt-dist": "2.0"}).verdict(None, "w8a8-fp8", "versioned-rt", "nvidia_h100_sxm")
    assert same.level is Level.NATIVE


def test_explain_shows_every_version_range(reg: Registry) -> None:
    (v,) = reg.explain(None, "w8a8-fp8", "versioned-rt", "nvidia_h100_sxm")
    spans = [(a.versions, a.level) for a in v.other_versions]
    assert spans == [(">=2.0", Level.NATIVE), ("<2.0", Level.WEIGHT_ONLY)]
    # a combination whose rows name no version has none
    (w,) = reg.explain(None, "w8a8-int8", "versioned-rt", "nvidia_h100_sxm")
    assert w.other_versions == () and w.runtime_version == ""


def test_installed_version_is_used_when_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    from quantmatch.registry import versions

    monkeypatch.setattr(versions, "installed_version", lambda dist: "1.5" if dist == "versioned-rt-dist" else None)
    with registered_plugin(VersionedRuntime, "versioned-plugin") as host:
        v = Registry(host).verdict(None, "w8a8-fp8", "versioned-rt", "nvidia_h100_sxm")
        assert (v.level, v.runtime_version) == (Level.WEIGHT_ONLY, "versioned-rt-dist 1.5 (installed)")
        assert Registry(host, installed=False).verdict(None, "w8a8-fp8", "versioned-rt",
                                                       "nvidia_h100_sxm").level is Level.NATIVE


def test_disputed_row_keeps_its_level_and_shows_the_other_side(reg: Registry) -> None:
    v = reg.verdict(None, "w8a8-int8", "versioned-rt", "nvidia_h100_sxm")
    assert v.level is Level.NATIVE
    assert v.disputed is not None and v.disputed.level is Level.EMULATED
    d = v.to_dict()["disputed"]
    assert d["source"] == "https://example.invalid/forum/123" and d["level"] == "emulated"


def test_ranges_cut_the_version_line() -> None:
    rows = [Capability(Level.NATIVE, "r", "s", since="0.10.2"), Capability(Level.NATIVE, "r", "s", since="0.9",
                                                                            until="0.10.2")]
    assert ranges(rows) == [("0.10.2", None, "0.10.2"), ("0.9", "0.10.2", "0.9"), (None, "0.9", "0")]


def test_bad_bounds_are_refused_at_registration() -> None:
    assert any("PEP 440" in p for p in validate_capability(Capability(Level.NATIVE, "r", "s", since="latest")))
    assert any("until is exclusive" in p for p in validate_capability(
        Capability(Level.NATIVE, "r", "s", since="2.0", until="1.0")))
    assert any("Dispute" in p for p in validate_capability(
        Capability(Level.NATIVE, "r", "s", disputed="no")))  # type: ignore[arg-type]


def test_runtime_version_flag_parsing() -> None:
    assert parse_runtime_versions(["vllm=0.9.2", "ONNXRuntime=1.22"]) == {"vllm": "0.9.2", "onnxruntime": "1.22"}
    with pytest.raises(InputError, match="NAME=VERSION"):
        parse_runtime_versions(["vllm"])
    with pytest.raises(InputError, match="not a version"):
        parse_runtime_versions(["vllm=newest"])
    with pytest.raises(UnknownChoiceError):
        Registry(runtime_versions={"no-such-runtime": "1.0"})


def test_cli_explain_names_the_version_and_the_other_versions(capsys: pytest.CaptureFixture[str]) -> None:
    with registered_plugin(VersionedRuntime, "versioned-plugin"):
        assert main(["explain", "-", "w8a8-fp8", "versioned-rt", "h100", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        lin = data["verdicts"][0] if "verdicts" in data else data[0]
        assert lin["runtime_version"] == "versioned-rt-dist 2.1 (latest known)"
        assert [a["versions"] for a in lin["versions"]] == [">=2.0", "<2.0"]
        assert main(["explain", "-", "w8a8-fp8", "versioned-rt", "h100",
                     "--runtime-version", "versioned-rt=1.2"]) == 0
        out = capsys.readouterr().out
        assert "weight-only" in out and "1.2 (asked)" in out and ">=2.0" in out
        assert main(["explain", "-", "w8a8-int8", "versioned-rt", "h100"]) == 0
        assert "disputed" in capsys.readouterr().out
        assert main(["explain", "-", "w8a8-fp8", "versioned-rt", "h100",
                     "--runtime-version", "versioned-rt"]) == 2
        assert "NAME=VERSION" in capsys.readouterr().err


def test_tui_explain_block_shows_dispute_and_versions(reg: Registry) -> None:
    from rich.console import Console

    from quantmatch.tui.rendering import verdict_block

    console = Console(width=120, record=True)
    for scheme in ("w8a8-fp8", "w8a8-int8"):
        (v,) = reg.explain(None, scheme, "versioned-rt", "nvidia_h100_sxm")
        console.print(verdict_block(v, "H100"))
    text = console.export_text()
    assert "for: versioned-rt-dist 2.1 (latest known)" in text
    assert ">=2.0:" in text and "<2.0:" in text
    assert "disputed:" in text and "https://example.invalid/forum/123" in text


def test_conformance_v2_fields(tmp_path, reg: Registry) -> None:  # type: ignore[no-untyped-def]
    from quantmatch.registry.conformance import run_conformance

    case = {"weights": "fp8-e4m3", "activations": "fp8-e4m3", "device": "nvidia_h100_sxm", "backend": "versioned-rt"}
    cases = [
        {**case, "id": "new", "expected": "native"},                                   # newest known: 2.1
        {**case, "id": "old", "runtime_version": "1.4", "expected": "weight-only"},
        {**case, "id": "old-wrong", "runtime_version": "1.4", "expected": "native"},
        {**case, "id": "dispute", "weights": "int8", "activations": "int8", "disputed": True, "expected": "emulated"},
        {**case, "id": "not-disputed", "disputed": True, "expected": "native"},          # the registry sees no dispute
    ]
    path = tmp_path / "cases.json"
    path.write_text(json.dumps({"format": "quantmatch conformance cases v2", "cases": cases}), encoding="utf-8")
    got = {r.case["id"]: r.status for r in run_conformance(path, reg).results}
    assert got == {"new": "agree", "old": "agree", "old-wrong": "disagree", "dispute": "agree",
                   "not-disputed": "disagree"}


def test_a_variant_profile_with_a_catalog_id_is_judged_by_its_own_features() -> None:
    from dataclasses import replace

    reg = Registry()
    h100 = reg.device("nvidia_h100_sxm")
    assert reg.verdict(None, "w8a8-fp8", "hardware", h100).level is Level.NATIVE
    no_fp8 = replace(h100, features=h100.features - {"fp8-e4m3fn", "fp8-e5m2"})
    assert reg.verdict(None, "w8a8-fp8", "hardware", no_fp8).level is not Level.NATIVE


def test_a_v1_case_is_judged_for_the_version_its_source_cites(tmp_path, reg: Registry) -> None:  # type: ignore[no-untyped-def]
    from quantmatch.registry.conformance import run_conformance

    case = {"weights": "fp8-e4m3", "activations": "fp8-e4m3", "device": "nvidia_h100_sxm", "backend": "versioned-rt",
            "expected": "weight-only"}
    cases = [
        {**case, "id": "cites-1.4", "source": "https://docs.example.invalid/versioned-rt/en/v1.4/support.html"},
        {**case, "id": "cites-other-project", "source": "https://docs.other.invalid/en/v1.4/x.html"},
        {**case, "id": "cites-tag", "source": "example/versioned-rt notes ; https://github.com/example/versioned-rt"
                                              "/releases/tag/v1.9.1"},
    ]
    path = tmp_path / "v1.json"
    path.write_text(json.dumps({"format": "quantmatch conformance cases v1", "cases": cases}), encoding="utf-8")
    got = {r.case["id"]: r.status for r in run_conformance(path, reg).results}
    assert got == {"cites-1.4": "agree", "cites-other-project": "disagree", "cites-tag": "agree"}


def test_vllm_fp8_on_turing_depends_on_the_vllm_version() -> None:
    """vLLM's FP8 floor moved from compute capability 8.0 to 7.5 (FP8 Marlin) in 0.14.0."""
    reg = Registry(installed=False)
    lin = reg.explain("fp8", "w8a8-fp8", "vllm", "nvidia_t4", layers=["linear"])[0]
    assert lin.level is Level.WEIGHT_ONLY and lin.runtime_version.endswith("(latest known)")
    assert [(a.versions, a.level) for a in lin.other_versions] == [(">=0.14.0", Level.WEIGHT_ONLY),
                                                                   ("<0.14.0", Level.UNSUPPORTED)]
    old = reg.at_versions({"vllm": "0.9.2"}).verdict("fp8", "w8a8-fp8", "vllm", "nvidia_t4")
    assert old.level is Level.UNSUPPORTED and old.runtime_version == "vllm 0.9.2 (asked)"
