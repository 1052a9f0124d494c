"""What the screens share: the chosen device(s) and the chosen combination. Pure Python."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Selection"]


@dataclass(frozen=True)
class Selection:
    """One combination picked in the matrix (or given on start-up) for the Explain screen.

    ``method`` ``None`` asks about the number formats alone (the ``hardware`` backend).
    ``target`` ``None`` lets the registry pick the device's main target the backend has.
    """

    method: str | None
    scheme: str
    backend: str
    target: str | None = None
    layer: str = "linear"

    @property
    def label(self) -> str:
        target = f"/{self.target}" if self.target else ""
        return f"{self.method or '(any method)'} {self.scheme} on {self.backend}{target}"

    def cli(self, device: str) -> str:
        """The equivalent ``quantmatch explain`` command line."""
        target = f" --target {self.target}" if self.target else ""
        layer = f" --layer {self.layer}" if self.layer != "linear" else ""
        return f"quantmatch explain {self.method or '-'} {self.scheme} {self.backend} {device}{target}{layer}"
