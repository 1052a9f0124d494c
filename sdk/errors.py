"""The one error hierarchy: every error quantmatch raises on purpose derives from :class:`QuantmatchError`.

- :class:`InputError`: bad input (a name, a path, a value, an option). The message says what is
  wrong and how to fix it; ``choices`` lists the valid values when there is a closed set and ``fix``
  the command or flag that fixes it. The CLI prints it and exits with code 2, never a traceback.
- :class:`PluginError`: a plugin's declaration or code failed; the message names the plugin and its
  distribution version.
- :class:`RunError`: something that was started failed while running (a runner, a converter, a
  subprocess); the CLI prints it and exits with code 1.

Module-specific errors (:class:`~quantmatch.sdk.scheme.SchemeError`,
:class:`~quantmatch.sdk.models.ModelSourceError`, :class:`~quantmatch.sdk.runner.RunnerError` ...)
subclass one of these, so a caller catches one base and the CLI catches them once.
"""

from __future__ import annotations

from collections.abc import Iterable

from quantmatch.sdk.text import plural

__all__ = ["InputError", "PluginError", "QuantmatchError", "RunError", "UnknownChoiceError"]


class QuantmatchError(Exception):
    """Base of every error quantmatch raises on purpose."""


class InputError(QuantmatchError, ValueError):
    """Bad input: exit code 2 in the CLI. ``choices``: the valid values, when there is a closed set;
    ``fix``: the command, flag or ``pip install`` line that fixes it (already part of the message)."""

    def __init__(self, message: str = "", *, choices: Iterable[str] = (), fix: str = "") -> None:
        super().__init__(message)
        self.choices: list[str] = list(choices)
        self.fix = fix


class PluginError(QuantmatchError):
    """A plugin's declaration or code failed; the message names the plugin."""


class RunError(QuantmatchError, RuntimeError):
    """Something that ran failed (a runner, a converter, a subprocess): exit code 1 in the CLI."""


class UnknownChoiceError(InputError):
    """An unknown device, method, backend, level, target, model ...: carries the valid choices and the
    closest ones (``close``)."""

    def __init__(self, kind: str, value: str, choices: Iterable[str]) -> None:
        import difflib  # only when a name is wrong: importing the errors stays cheap

        self.kind, self.value = kind, value
        every = sorted(set(choices))
        close = difflib.get_close_matches(value.lower(), every, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        shown = every if len(every) <= 60 else [*every[:60], "..."]
        super().__init__(f"unknown {kind} {value!r}.{hint}\nValid {plural(kind)}: {', '.join(shown)}",
                         choices=every)
        self.close = close
