"""The DeviceFamily interface: a catalog of known devices plus live detection of this machine."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, ClassVar

from quantmatch.sdk.profile import HardwareProfile

__all__ = ["Detection", "DeviceFamily", "load_catalog_file"]


@dataclass(frozen=True)
class Detection:
    """What live detection found for one family: devices, or "not present, because ..."."""

    family: str
    devices: tuple[HardwareProfile, ...] = ()
    reason: str = ""

    @property
    def present(self) -> bool:
        return bool(self.devices)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "present": self.present, "reason": self.reason,
                "devices": [d.to_dict() for d in self.devices]}


@cache
def load_catalog_file(package: str, filename: str) -> tuple[dict[str, Any], ...]:
    """Read a JSON catalog shipped as package data: ``{"devices": [...]}``."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    data = json.loads(text)
    return tuple(data["devices"])


class DeviceFamily:
    """A device family plugin (NVIDIA, AMD ROCm, Apple Metal, x86 CPU, Arm CPU, ...).

    Contract:

    - ``name`` is the family id (``nvidia``, ``amd-rocm``, ``apple-metal``, ``x86-cpu``, ``arm-cpu``).
    - ``catalog()`` returns the known devices as :class:`HardwareProfile` data (no probing).
    - ``detect()`` inspects the running machine; it never raises: when the vendor library or
      driver is missing it returns a :class:`Detection` with no devices and the reason.
    - ``requires`` lists the optional packages detection uses (``nvidia-ml-py`` ...).
    - ``targets`` lists the execution targets this family *adds* to
      :data:`quantmatch.sdk.profile.TARGETS` (for example ``("hpu",)`` for Intel Gaudi); its devices and
      any backend may then use them. Built-in families add none.
    """

    name: ClassVar[str] = ""
    vendor: ClassVar[str] = ""
    description: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    targets: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def catalog(cls) -> tuple[HardwareProfile, ...]:
        return ()

    @classmethod
    def detect(cls) -> Detection:
        return Detection(cls.name, (), "no detection implemented")
