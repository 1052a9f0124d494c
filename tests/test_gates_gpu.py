"""The run-time kernel gates of the GPU runtimes (vLLM, bitsandbytes, torchao, TensorRT-LLM, MLX).

Each test takes one catalog device, makes a second one that differs from it only in the gate the runtime
checks (architecture id, compute capability or one feature flag, with ``dataclasses.replace``), and asks the
registry for the same scheme on both: the two verdicts must differ the way the runtime's own check does.
Gates that moved between runtime versions are checked at the versions on both sides of the change.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from quantmatch.registry import Registry
from quantmatch.sdk.profile import HardwareProfile
from quantmatch.sdk.verdict import Level, Verdict

N, W, E, U = Level.NATIVE, Level.WEIGHT_ONLY, Level.EMULATED, Level.UNSUPPORTED


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry(installed=False)  # the newest versions the rows were checked against, not what is installed


def dev(reg: Registry, device: str, **changes: object) -> HardwareProfile:
    base = reg.device(device)
    if not changes:
        return base
    return replace(base, id=f"{base.id}-gate-variant", **changes)  # type: ignore[arg-type]


def without(reg: Registry, device: str, *features: str, **changes: object) -> HardwareProfile:
    base = reg.device(device)
    return dev(reg, device, features=base.features - frozenset(features),
               cpu_features=base.cpu_features - frozenset(features), **changes)


def with_(reg: Registry, device: str, *features: str, **changes: object) -> HardwareProfile:
    base = reg.device(device)
    return dev(reg, device, features=base.features | frozenset(features), **changes)


def ask(reg: Registry, method: str | None, scheme: str, backend: str, device: HardwareProfile,
        target: str | None = None, layer: str = "linear") -> Verdict:
    return reg.verdict(method, scheme, backend, device, target, layer)


def text(v: Verdict) -> str:
    return v.reasons[0].text.lower()


def runs(v: Verdict) -> str:
    return (v.runs_as or "").lower()


# ---- vLLM (CUDA) ----------------------------------------------------------------------------------
def test_vllm_fp8_w8a8_native_needs_fp8_tensor_cores(reg: Registry) -> None:
    l4 = ask(reg, "fp8", "w8a8-fp8", "vllm", dev(reg, "nvidia_l4"))
    no_fp8 = ask(reg, "fp8", "w8a8-fp8", "vllm", without(reg, "nvidia_l4", "fp8-e4m3fn", "fp8-e5m2"))
    assert l4.level is N
    assert no_fp8.level is W and "marlin" in runs(no_fp8)


def test_vllm_fp8_min_capability_75_since_0_14(reg: Registry) -> None:
    t4 = ask(reg, "fp8", "w8a8-fp8", "vllm", dev(reg, "t4"))
    volta_cc = ask(reg, "fp8", "w8a8-fp8", "vllm", dev(reg, "t4", compute_capability=7.0))
    assert t4.level is W and "marlin" in runs(t4)
    assert volta_cc.level is U and "75" in text(volta_cc)


def test_vllm_fp8_min_capability_80_before_0_14(reg: Registry) -> None:
    old = reg.at_versions({"vllm": "0.13.0"})
    t4 = ask(old, "fp8", "w8a8-fp8", "vllm", dev(old, "t4"))
    ampere_cc = ask(old, "fp8", "w8a8-fp8", "vllm", dev(old, "t4", compute_capability=8.0))
    assert t4.level is U and "80" in text(t4)
    assert ampere_cc.level is W and "marlin" in runs(ampere_cc)


def test_vllm_fp8_moe_marlin_floor_moves_with_version(reg: Registry) -> None:
    assert ask(reg, "fp8", "w8a8-fp8", "vllm", dev(reg, "t4"), layer="moe").level is W
    old = reg.at_versions({"vllm": "0.13.0"})
    assert ask(old, "fp8", "w8a8-fp8", "vllm", dev(old, "t4"), layer="moe").level is U


def test_vllm_int8_w8a8_needs_cc_75(reg: Registry) -> None:
    assert ask(reg, "smoothquant", "w8a8-int8", "vllm", dev(reg, "t4")).level is N
    assert ask(reg, "smoothquant", "w8a8-int8", "vllm", dev(reg, "t4", compute_capability=7.0)).level is U


def test_vllm_wna16_marlin_floor_and_version(reg: Registry) -> None:
    t4 = ask(reg, "gptq", "w4a16-g128", "vllm", dev(reg, "t4"))
    volta_cc = ask(reg, "gptq", "w4a16-g128", "vllm", dev(reg, "t4", compute_capability=7.0))
    assert t4.level is W and "marlin" in runs(t4)
    assert volta_cc.level is W and "exllama" in runs(volta_cc)
    old = reg.at_versions({"vllm": "0.13.0"})
    assert "exllama" in runs(ask(old, "gptq", "w4a16-g128", "vllm", dev(old, "t4")))
    # AWQ (zero points) on Turing before v0.14: not Marlin, AWQ's own kernel (AWQConfig min capability 75)
    awq_old = ask(old, "awq", "w4a16-g128-asym", "vllm", dev(old, "t4"))
    assert awq_old.level is W and "awq" in runs(awq_old)


def test_vllm_machete_is_sm90_only(reg: Registry) -> None:
    h100 = ask(reg, "gptq", "w4a16-g128", "vllm", dev(reg, "h100"))
    other = ask(reg, "gptq", "w4a16-g128", "vllm", dev(reg, "h100", compute_capability=8.9))
    assert "machete" in runs(h100) and "marlin" in runs(other)


def test_vllm_nvfp4_per_blackwell_family_feature(reg: Registry) -> None:
    b200 = ask(reg, "rtn", "w4a4-nvfp4", "vllm", dev(reg, "nvidia_b200"))
    no_tcgen05 = ask(reg, "rtn", "w4a4-nvfp4", "vllm", without(reg, "nvidia_b200", "tcgen05"))
    no_fp4 = ask(reg, "rtn", "w4a4-nvfp4", "vllm", without(reg, "nvidia_b200", "tcgen05", "block-scale-mma"))
    assert b200.level is N and "tcgen05" in text(b200)
    assert no_tcgen05.level is N and "sm_120" in text(no_tcgen05)
    assert no_fp4.level is W and "marlin" in runs(no_fp4)


def test_vllm_nvfp4_marlin_floor_moves_with_version(reg: Registry) -> None:
    assert ask(reg, "rtn", "w4a4-nvfp4", "vllm", dev(reg, "t4")).level is W
    old = reg.at_versions({"vllm": "0.13.0"})
    assert ask(old, "rtn", "w4a4-nvfp4", "vllm", dev(old, "t4")).level is U
    assert ask(old, "rtn", "w4a4-nvfp4", "vllm", dev(old, "t4", compute_capability=8.0)).level is W


def test_vllm_mxfp4_family_100_only(reg: Registry) -> None:
    b200 = ask(reg, "rtn", "w4a4-mxfp4", "vllm", dev(reg, "nvidia_b200"))
    sm120_like = ask(reg, "rtn", "w4a4-mxfp4", "vllm", without(reg, "nvidia_b200", "tcgen05"))
    assert b200.level is N and sm120_like.level is W


# ---- vLLM (ROCm) ----------------------------------------------------------------------------------
def test_vllm_rocm_fp8_supports_fp8_includes_gfx12(reg: Registry) -> None:
    rdna3 = ask(reg, "fp8", "w8a8-fp8", "vllm", dev(reg, "amd_rx_7900_xtx"))
    rdna4 = ask(reg, "fp8", "w8a8-fp8", "vllm", dev(reg, "amd_rx_7900_xtx", arch="gfx1201"))
    assert rdna3.level is U
    assert rdna4.level is N and "gfx12" in text(rdna4)


def test_vllm_rocm_fp8_fnuz(reg: Registry) -> None:
    mi300 = ask(reg, "fp8", "w8a8-fp8", "vllm", dev(reg, "amd_mi300x"))
    no_fp8 = ask(reg, "fp8", "w8a8-fp8", "vllm", without(reg, "amd_mi300x", "fp8-e4m3fnuz", "fp8-e5m2fnuz"))
    assert mi300.level is N and "fnuz" in text(mi300)
    assert no_fp8.level is U


def test_vllm_rocm_bitsandbytes_off_gfx9_and_removed(reg: Registry) -> None:
    mid = reg.at_versions({"vllm": "0.20.0"})
    rdna = ask(mid, None, "w4a16-nf4", "vllm", dev(mid, "amd_rx_7900_xtx"))
    gfx9 = ask(mid, None, "w4a16-nf4", "vllm", dev(mid, "amd_rx_7900_xtx", arch="gfx90a"))
    assert rdna.level is W
    assert gfx9.level is U and "gfx9" in text(gfx9)
    before = reg.at_versions({"vllm": "0.11.0"})
    assert ask(before, None, "w4a16-nf4", "vllm", dev(before, "amd_rx_7900_xtx")).level is U
    removed = ask(reg, None, "w4a16-nf4", "vllm", dev(reg, "amd_rx_7900_xtx"))
    assert removed.level is U and "0.28" in text(removed)
    cuda_removed = ask(reg, "bitsandbytes", "w8a8-int8", "vllm", dev(reg, "h100"))
    assert cuda_removed.level is U
    assert ask(reg.at_versions({"vllm": "0.27.0"}), "bitsandbytes", "w8a8-int8", "vllm", dev(reg, "h100")).level is N


def test_vllm_rocm_int8_docs_and_code_disagree(reg: Registry) -> None:
    v = ask(reg, None, "w8a8-int8", "vllm", dev(reg, "amd_mi300x"))
    assert v.level is U and v.disputed is not None and v.disputed.level is N


# ---- bitsandbytes ---------------------------------------------------------------------------------
def test_bnb_cpu_int8_real_only_with_avx512(reg: Registry) -> None:
    spr = ask(reg, "bitsandbytes", "w8a8-int8", "bitsandbytes", dev(reg, "intel_sapphire_rapids"), "cpu")
    no512 = ask(reg, "bitsandbytes", "w8a8-int8", "bitsandbytes",
                without(reg, "intel_sapphire_rapids", "avx512vl", "avx512bw", "avx512dq"), "cpu")
    assert spr.level is N
    assert no512.level is E and "fp32" in runs(no512)
    older = reg.at_versions({"bitsandbytes": "0.49.0"})
    assert ask(older, "bitsandbytes", "w8a8-int8", "bitsandbytes",
               without(older, "intel_sapphire_rapids", "avx512vl", "avx512bw", "avx512dq"), "cpu").level is N
    none = reg.at_versions({"bitsandbytes": "0.45.0"})
    assert ask(none, "bitsandbytes", "w8a8-int8", "bitsandbytes", dev(none, "intel_sapphire_rapids"),
               "cpu").level is U


def test_bnb_llm_int8_needs_cc_75(reg: Registry) -> None:
    assert ask(reg, "bitsandbytes", "w8a8-int8", "bitsandbytes", dev(reg, "t4")).level is N
    assert ask(reg, "bitsandbytes", "w8a8-int8", "bitsandbytes",
               dev(reg, "t4", compute_capability=7.0)).level is U


def test_bnb_rocm_wheel_targets_per_release(reg: Registry) -> None:
    rx = ask(reg, "bitsandbytes", "w4a16-nf4", "bitsandbytes", dev(reg, "amd_rx_7900_xtx"))
    gfx906 = ask(reg, "bitsandbytes", "w4a16-nf4", "bitsandbytes", dev(reg, "amd_rx_7900_xtx", arch="gfx906"))
    assert rx.level is W and gfx906.level is U
    rdna2 = dev(reg, "amd_rx_7900_xtx", arch="gfx1030")
    assert ask(reg, "bitsandbytes", "w4a16-nf4", "bitsandbytes", rdna2).level is W
    old = reg.at_versions({"bitsandbytes": "0.49.0"})
    assert ask(old, "bitsandbytes", "w4a16-nf4", "bitsandbytes", rdna2).level is U
    gfx1151 = dev(reg, "amd_rx_7900_xtx", arch="gfx1151")
    assert ask(old, "bitsandbytes", "w4a16-nf4", "bitsandbytes", gfx1151).level is W
    assert ask(reg.at_versions({"bitsandbytes": "0.48.0"}), "bitsandbytes", "w4a16-nf4", "bitsandbytes",
               gfx1151).level is U


# ---- torchao --------------------------------------------------------------------------------------
def test_torchao_float8_rocm_gate_is_mi300_or_mi350(reg: Registry) -> None:
    mi300 = ask(reg, None, "w8a8-fp8", "torchao", dev(reg, "amd_mi300x"))
    same_units_gfx12 = ask(reg, None, "w8a8-fp8", "torchao", dev(reg, "amd_mi355x", arch="gfx1201"))
    assert mi300.level is N
    assert ask(reg, None, "w8a8-fp8", "torchao", dev(reg, "amd_mi355x")).level is N
    assert same_units_gfx12.level is U and "is_mi300" in text(same_units_gfx12)


def test_torchao_float8_cuda_is_sm_at_least_89(reg: Registry) -> None:
    assert ask(reg, None, "w8a8-fp8", "torchao", dev(reg, "nvidia_l4")).level is N
    assert ask(reg, None, "w8a8-fp8", "torchao", dev(reg, "nvidia_l4", compute_capability=8.6)).level is U


def test_torchao_int4_default_kernel_is_hopper_only(reg: Registry) -> None:
    h100 = ask(reg, None, "w4a16-g128-bf16", "torchao", dev(reg, "h100"))
    other = ask(reg, None, "w4a16-g128-bf16", "torchao", dev(reg, "h100", compute_capability=8.0))
    assert h100.level is W and "mslk" in runs(h100)
    assert other.level is W and "tinygemm" in runs(other)
    old = reg.at_versions({"torchao": "0.13.0"})
    assert "tinygemm" in runs(ask(old, None, "w4a16-g128-bf16", "torchao", dev(old, "h100")))


def test_torchao_mx_needs_block_scaled_units(reg: Registry) -> None:
    b200 = ask(reg, None, "w4a4-mxfp4", "torchao", dev(reg, "nvidia_b200"))
    none = ask(reg, None, "w4a4-mxfp4", "torchao", without(reg, "nvidia_b200", "tcgen05", "block-scale-mma"))
    assert b200.level is N
    assert none.level is U and "emulated" in text(none)


# ---- TensorRT-LLM ---------------------------------------------------------------------------------
def test_tensorrt_llm_fp8_needs_fp8_tensor_cores(reg: Registry) -> None:
    assert ask(reg, "fp8", "w8a8-fp8", "tensorrt-llm", dev(reg, "nvidia_l40s")).level is N
    no_fp8 = without(reg, "nvidia_l40s", "fp8-e4m3fn", "fp8-e5m2")
    assert ask(reg, "fp8", "w8a8-fp8", "tensorrt-llm", no_fp8).level is U


def test_tensorrt_llm_int8_smoothquant_ampere_floor(reg: Registry) -> None:
    assert ask(reg, "smoothquant", "w8a8-int8", "tensorrt-llm", dev(reg, "nvidia_a10")).level is N
    turing_cc = dev(reg, "nvidia_a10", compute_capability=7.5)
    assert ask(reg, "smoothquant", "w8a8-int8", "tensorrt-llm", turing_cc).level is U


def test_tensorrt_llm_nvfp4_kv_needs_tcgen05(reg: Registry) -> None:
    b200 = ask(reg, None, "fp16-kvnvfp4", "tensorrt-llm", dev(reg, "nvidia_b200"), layer="kv-cache")
    no = ask(reg, None, "fp16-kvnvfp4", "tensorrt-llm", without(reg, "nvidia_b200", "tcgen05"), layer="kv-cache")
    assert b200.level is N and no.level is U


# ---- MLX ------------------------------------------------------------------------------------------
def _apple_with_tensor_api(reg: Registry) -> HardwareProfile:
    try:
        m5 = reg.device("apple_m5")
    except Exception:  # the catalog entry may not exist yet: the gate is the feature, not the id
        return with_(reg, "apple_m4", "metal-tensor-api")
    return m5 if "metal-tensor-api" in m5.features else with_(reg, "apple_m5", "metal-tensor-api")


def test_mlx_nax_kernels_follow_the_tensor_api_feature(reg: Registry) -> None:
    nax_dev = _apple_with_tensor_api(reg)
    plain = replace(nax_dev, id=f"{nax_dev.id}-no-nax", features=nax_dev.features - {"metal-tensor-api"})
    nax = ask(reg, None, "w4a16-g64", "mlx", nax_dev)
    simd = ask(reg, None, "w4a16-g64", "mlx", plain)
    assert nax.level is W and simd.level is W  # still weight-only: the weights are dequantized in the kernel
    assert "nax" in runs(nax) and "simdgroup" in runs(simd)


def test_mlx_fp4_modes_by_version(reg: Registry) -> None:
    m4 = dev(reg, "apple_m4")
    assert ask(reg, None, "w4a16-nvfp4", "mlx", m4).level is W
    assert ask(reg.at_versions({"mlx": "0.29.0"}), None, "w4a16-nvfp4", "mlx", m4).level is U
    assert ask(reg.at_versions({"mlx": "0.29.0"}), None, "w4a16-mxfp4", "mlx", m4).level is W
    assert ask(reg.at_versions({"mlx": "0.28.0"}), None, "w4a16-mxfp4", "mlx", m4).level is U
