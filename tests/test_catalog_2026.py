"""Every device the catalog adds beyond the shared reference catalog: sourced, listed, in the docs matrix, planned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantmatch.cli.main import main
from quantmatch.planner import plan
from quantmatch.registry import Registry

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference" / "hardware_catalog.json"
ADDED_2026 = (
    "nvidia_b300", "nvidia_rtx_pro_6000_blackwell", "nvidia_dgx_spark_gb10", "nvidia_jetson_agx_orin",
    "nvidia_jetson_thor", "nvidia_rtx_4060", "nvidia_rtx_4070", "amd_mi350x", "amd_rx_9070_xt", "amd_strix_halo",
    "amd_strix_point", "apple_m5", "intel_meteor_lake", "intel_lunar_lake", "intel_arrow_lake", "aws_graviton2",
    "aws_graviton3", "aws_graviton4", "nvidia_grace", "intel_arc_a770", "intel_arc_b580", "intel_max_1550",
)


def test_reference_catalog_is_a_subset() -> None:
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} not available")
    ref = {d["id"] for d in json.loads(REFERENCE.read_text())["devices"]}
    assert ref <= {d.id for d in Registry().devices()}


@pytest.mark.parametrize("device_id", ADDED_2026)
def test_added_device_is_sourced_listed_documented_and_planned(device_id: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    dev = Registry().device(device_id)
    assert dev.sources, "every catalog entry names its sources"
    for what, fig in (("memory", dev.memory), ("bandwidth", dev.bandwidth), *dev.peaks.items()):
        assert fig.source or fig.confidence != "sourced", f"{what}: a sourced figure without its source"
    assert main(["devices", device_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["device"]["id"] == device_id
    page = REPO / "docs" / "matrix" / f"{device_id}.md"
    assert page.is_file() and dev.name in page.read_text(encoding="utf-8")
    p = plan("llama-3.1-8b", device_id)
    assert p.device.profile.id == device_id
    assert p.candidates or p.rejections, "the planner judged something for it"
