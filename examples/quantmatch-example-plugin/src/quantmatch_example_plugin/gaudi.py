"""The ``intel-gaudi`` device family: Intel Gaudi 2, with every figure sourced, and live detection.

Gaudi runs PyTorch through the ``hpu`` device, an execution target quantmatch does not know by
itself: the family declares it in ``targets`` so that its device and any backend may use it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from types import MappingProxyType
from typing import ClassVar

from quantmatch.sdk.device import Detection, DeviceFamily
from quantmatch.sdk.profile import Figure, HardwareProfile

from . import sources as s

FAMILY = "intel-gaudi"
TARGET = "hpu"

GAUDI2 = HardwareProfile(
    id="intel_gaudi2",
    name="Intel Gaudi 2",
    vendor="intel",
    family=FAMILY,
    arch="gaudi2",
    arch_name="Gaudi 2 (2 MMEs, 24 TPCs)",
    targets=(TARGET,),
    # Operand types of the matrix engine (MME). FP8 is used through torch.float8_e4m3fn/e5m2 with
    # hardware-aligned scales on Gaudi 2. INT8 is not modelled as an MME type: no source gives an INT8
    # matmul rate and no runtime below uses one.
    features=frozenset({"fp32", "tf32", "fp16", "bf16", "fp8-e4m3fn", "fp8-e5m2"}),
    memory=Figure(96, "GB", s.join(s.HF_TRANSFORMERS_GAUDI, s.HF_GAUDI2_BLOG, s.ML_ENGINEERING_ACCELERATORS),
                  note="HBM2e, six 16 GB stacks"),
    bandwidth=Figure(2450, "GB/s", s.join(s.GAUDI2_PRESS_BANDWIDTH, s.GAUDI3_LAUNCH_PRESS,
                                          s.ML_ENGINEERING_ACCELERATORS),
                     note="press reports of Intel's figure give 2.45 TB/s; the ml-engineering table rounds to "
                          "2.46 TB/s"),
    peaks=MappingProxyType({
        "bf16": Figure(432, "TFLOPS", s.join(s.ML_ENGINEERING_ACCELERATORS, s.GAUDI3_LAUNCH_PRESS),
                       note="MME: 1650 MHz x 256x256 FMAs x 2 MMEs = 432.5 TFLOPS dense"),
        "fp8": Figure(865, "TFLOPS", s.join(s.ML_ENGINEERING_ACCELERATORS, s.GAUDI3_LAUNCH_PRESS), "disputed",
                      note="865 (twice the BF16 rate, ml-engineering table); a press report of Intel's "
                           "Vision 2024 slide gives 835"),
    }),
    sources=(s.HABANA_ARCHITECTURE, s.HF_TRANSFORMERS_GAUDI, s.ML_ENGINEERING_ACCELERATORS,
             s.GAUDI2_PRESS_BANDWIDTH, s.VLLM_GAUDI_SCALES),
    notes="Intel publishes only partial TFLOPS figures for Gaudi 2: FP32, TF32 and FP16 rates are unknown. "
          "FP8 E4M3 on Gaudi 2 uses hardware-aligned scales (exponent biases 3/7/11/15).",
    aliases=("gaudi2", "gaudi-2"),
)
"""Intel Gaudi 2, as the catalog knows it."""


class IntelGaudiFamily(DeviceFamily):
    """Intel Gaudi accelerators (HPUs), driven through the Intel Gaudi software stack."""

    name = FAMILY
    vendor = "intel"
    description = "Intel Gaudi AI accelerators (HPU): Gaudi 2"
    requires = ("habana-torch-plugin",)
    targets: ClassVar[tuple[str, ...]] = (TARGET,)

    @classmethod
    def catalog(cls) -> tuple[HardwareProfile, ...]:
        return (GAUDI2,)

    @classmethod
    def detect(cls) -> Detection:
        """HPUs on this machine. Never raises: without the Gaudi stack it says so."""
        if importlib.util.find_spec("habana_frameworks") is None:
            return Detection(cls.name, (), "habana_frameworks (the Intel Gaudi PyTorch bridge) is not "
                                           "installed, so no HPU can be seen")
        try:
            import habana_frameworks.torch.hpu as hthpu  # type: ignore[import-not-found]

            if not hthpu.is_available():
                return Detection(cls.name, (), "habana_frameworks is installed but reports no HPU")
            count = int(hthpu.device_count())
            reported = str(hthpu.get_device_name())
        except Exception as e:  # a broken driver must not break detection
            return Detection(cls.name, (), f"HPU probe failed: {type(e).__name__}: {e}")
        if "2" not in reported:
            return Detection(cls.name, (), f"found {count} x {reported!r}, which this plugin's catalog "
                                           "does not describe (it knows Gaudi 2)")
        devices = tuple(replace(GAUDI2, id=f"hpu:{i}", name=f"{reported} (hpu:{i})", detected=True,
                                aliases=()) for i in range(count))
        return Detection(cls.name, devices, f"{count} HPU(s) through habana_frameworks")
