"""Method options as typed, documented class-level data that refuses unknown keys.

A method declares its options as a frozen dataclass deriving from :class:`MethodOptions`, each field
with a type, a default and a help line (:func:`option`), and names the class in
``Quantizer.options``::

    @dataclass(frozen=True)
    class GPTQOptions(MethodOptions):
        damp: float = option(0.01, "dampening added to the Hessian's diagonal, relative to its mean")

Field types: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]`` choices, ``tuple[str, ...]`` or
``list[str]``, and any of these ``| None``. :meth:`MethodOptions.parse` turns a mapping (``--option
KEY=VALUE`` pairs, ``quantize(**options)``) into an instance; an unknown key or a value of the wrong
type raises :class:`OptionsError` naming every valid key with its type and default. Plain standard
library: importing a method plugin stays cheap.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from quantmatch.sdk.errors import InputError

__all__ = ["PIPELINE_KEYS", "MethodOptions", "OptionSpec", "OptionsError", "option", "validate_options_class"]

PIPELINE_KEYS = frozenset({"rules", "calibration", "seed", "progress", "stream", "job_dir", "resume", "offload_dir"})
"""What the pipeline passes a method beside its options (each has its own argument and flag)."""

_O = TypeVar("_O", bound="MethodOptions")
_KINDS = {bool: "bool", int: "int", float: "float", str: "str"}
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


class OptionsError(InputError):
    """An unknown option or a value of the wrong type; ``problem`` is the first line, ``valid`` the
    valid options on one line (the message has both)."""

    def __init__(self, problem: str, valid: str, listing: str, choices: list[str]) -> None:
        super().__init__(f"{problem}\n{listing}", choices=choices, fix=valid)
        self.problem, self.valid = problem, valid


def option(default: Any, help: str) -> Any:
    """A documented option field: ``damp: float = option(0.01, "...")``."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One option as data. ``kind``: ``bool``, ``int``, ``float``, ``str`` or ``list[str]``."""

    key: str
    kind: str
    default: Any
    help: str = ""
    nullable: bool = False
    choices: tuple[Any, ...] = ()
    sequence: type = tuple

    def type_text(self) -> str:
        """``float``, ``int|null``, ``f16|bf16|f32``, ``list[str]``."""
        return "|".join([*(map(str, self.choices) if self.choices else [self.kind]), *(["null"] * self.nullable)])

    def short(self) -> str:
        """``damp: float = 0.01``."""
        return f"{self.key}: {self.type_text()} = {self.default_text()}"

    def default_text(self) -> str:
        return json.dumps(list(self.default) if isinstance(self.default, tuple) else self.default)

    def to_dict(self) -> dict[str, Any]:
        default = list(self.default) if isinstance(self.default, tuple) else self.default
        return {"key": self.key, "type": self.kind, "nullable": self.nullable, "choices": list(self.choices),
                "default": default, "help": self.help}

    def coerce(self, value: Any) -> Any:
        """``value`` as this option's type (what the command line hands over converts); ``ValueError`` else."""
        if value is None and self.nullable:
            return None
        if self.choices:
            v = _base(type(self.choices[0]), value)
            if isinstance(v, str):
                v = next((c for c in self.choices if c.lower() == v.lower()), v)
            if v is not None and not isinstance(v, bool) and v in self.choices:
                return v
        elif self.kind == "list[str]":
            items = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value
            if isinstance(items, (list, tuple)) and all(isinstance(p, str) for p in items):
                return self.sequence(items)
        else:
            v = _base({"bool": bool, "int": int, "float": float, "str": str}[self.kind], value)
            if v is not None:
                return v
        raise ValueError(f"{self.key} expects {self._expected()}, got {value!r}")

    def _expected(self) -> str:
        if self.choices:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            text = {"bool": "true or false", "int": "an int", "float": "a float", "str": "a string",
                    "list[str]": "a list of strings (or one comma-separated string)"}[self.kind]
        return text + (" or null" if self.nullable else "")


def _base(kind: type, value: Any) -> Any:
    """``value`` as ``kind`` (bool, int, float, str) where that is lossless, else ``None``."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, (str, int)) else ""
        return True if text in _TRUE else False if text in _FALSE else None
    if isinstance(value, bool):
        return None
    try:
        if kind is int:
            return int(value.strip()) if isinstance(value, str) else int(value) if float(value).is_integer() else None
        if kind is float:
            return float(value) if isinstance(value, (str, int, float)) else None
    except (TypeError, ValueError):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value if isinstance(value, str) else str(value) if isinstance(value, (int, float)) else None


def _spec(f: dataclasses.Field[Any], hint: Any) -> OptionSpec:
    nullable = False
    if get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint):
        rest = [a for a in get_args(hint) if a is not type(None)]
        nullable, hint = True, rest[0] if len(rest) == 1 else hint
    origin, args = get_origin(hint), get_args(hint)
    default = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
    if default is dataclasses.MISSING:
        raise TypeError(f"option {f.name} has no default")
    common = {"key": f.name, "default": default, "help": str(f.metadata.get("help", "")), "nullable": nullable}
    if hint in _KINDS:
        return OptionSpec(kind=_KINDS[hint], **common)
    if origin is Literal and args and len({type(a) for a in args}) == 1 and type(args[0]) in _KINDS:
        return OptionSpec(kind=_KINDS[type(args[0])], choices=args, **common)
    if (origin is tuple and args == (str, ...)) or (origin is list and args == (str,)):
        return OptionSpec(kind="list[str]", sequence=origin, **common)
    raise TypeError(f"option {f.name} has type {hint!r}; options are bool, int, float, str, Literal[...], "
                    "tuple[str, ...] or list[str], optionally | None")


_SPECS: dict[type, tuple[OptionSpec, ...]] = {}


def _specs(cls: type[MethodOptions]) -> tuple[OptionSpec, ...]:
    """The fields' specs, a subclass's own first (GPTQ's ``damp`` ahead of the shared ``exclude``)."""
    if cls not in _SPECS:
        hints = get_type_hints(cls)
        depth = {k: i for i, c in reversed(list(enumerate(cls.__mro__))) for k in vars(c).get("__annotations__", {})}
        fields = sorted(dataclasses.fields(cls), key=lambda f: depth[f.name])
        _SPECS[cls] = tuple(_spec(f, hints[f.name]) for f in fields)
    return _SPECS[cls]


@dataclasses.dataclass(frozen=True)
class MethodOptions:
    """Base of every method's options (itself: no options). Subclasses are ``@dataclass(frozen=True)``
    with :func:`option` fields."""

    @classmethod
    def specs(cls) -> tuple[OptionSpec, ...]:
        """Each option's key, type, default and help, in declaration order."""
        return _specs(cls)

    @classmethod
    def schema(cls) -> list[dict[str, Any]]:
        """The options as JSON-able data: ``[{key, type, nullable, choices, default, help}]``."""
        return [s.to_dict() for s in cls.specs()]

    @classmethod
    def describe(cls, method: str = "", *, compact: bool = False) -> str:
        """The valid options, one per line with type, default and help (``compact``: one line)."""
        who = f"{method} " if method else ""
        if not cls.specs():
            return f"{method or 'this method'} takes no options"
        if compact:
            return f"valid {who}options: " + ", ".join(s.short() for s in cls.specs())
        return "\n".join([f"valid {who}options:",
                          *(f"  {s.key} ({s.type_text()}, default {s.default_text()}): {s.help}"
                            for s in cls.specs())])

    @classmethod
    def parse(cls: type[_O], values: Mapping[str, Any] | None = None, *, method: str = "") -> _O:
        """An instance from ``values``; :class:`OptionsError` for unknown keys and values of the wrong type."""
        specs = {s.key: s for s in cls.specs()}
        values = dict(values or {})

        def fail(problem: str) -> OptionsError:
            return OptionsError(problem, cls.describe(method, compact=True), cls.describe(method), list(specs))

        unknown = [k for k in values if k not in specs]
        if unknown:
            close = [c for k in unknown for c in difflib.get_close_matches(k, specs, n=2, cutoff=0.6)]
            hint = f" Did you mean: {', '.join(dict.fromkeys(close))}?" if close else ""
            noun = "option" + ("s" if len(unknown) > 1 else "")
            raise fail(f"unknown {method + ' ' if method else ''}{noun} {', '.join(map(repr, unknown))}.{hint}")
        try:
            return cls(**{k: specs[k].coerce(v) for k, v in values.items()})
        except (TypeError, ValueError) as e:
            raise fail(f"{method + ' option ' if method else ''}{e}") from None

    @classmethod
    def of(cls: type[_O], options: Mapping[str, Any] | None, method: str = "") -> _O:
        """:meth:`parse` of a method's ``options`` mapping, leaving out the pipeline's own keys."""
        return cls.parse({k: v for k, v in (options or {}).items() if k not in PIPELINE_KEYS}, method=method)

    def to_dict(self) -> dict[str, Any]:
        """Every option's value, by key."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def validate_options_class(cls: Any) -> list[str]:
    """What is wrong with a ``Quantizer.options`` declaration (empty: nothing)."""
    if not (isinstance(cls, type) and issubclass(cls, MethodOptions)):
        return [f"{cls!r} is not a quantmatch.sdk.options.MethodOptions subclass"]
    own = [k for k, a in vars(cls).get("__annotations__", {}).items()
           if k not in getattr(cls, "__dataclass_fields__", {}) and "ClassVar" not in str(a)]
    if own or not dataclasses.is_dataclass(cls):
        return [f"{cls.__name__} is not declared with @dataclass(frozen=True) (fields {', '.join(own)} are ignored)"]
    try:
        specs = cls.specs()
        for s in specs:
            s.coerce(s.default)
    except (TypeError, ValueError, NameError) as e:
        return [f"{cls.__name__}: {e}"]
    problems = [f"{cls.__name__}: option {s.key} clashes with the pipeline's own {s.key}"
                for s in specs if s.key in PIPELINE_KEYS]
    problems += [f"{cls.__name__}: option {s.key} has no help (option(default, help))" for s in specs if not s.help]
    return problems
