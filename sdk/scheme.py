"""The precision a user asks for, with one canonical string form that round-trips.

Grammar (tokens joined by ``-``, in this order in the canonical form)::

    fp32 | tf32 | fp16 | bf16                       unquantized baselines
    gguf-<type>[-kv<fmt>]                           a llama.cpp type: gguf-q4_k_m, gguf-q8_0 ...
    w<W>a<A>[-<fmt>][-g<N>][-asym][-bf16|-fp16][-static][-kv<fmt>]

``W`` is the weight bit width (1-8). ``A`` is the activation bit width: 16 or 32 means weight-only
(weights stored low-bit, math in 16/32-bit float); 4, 6 or 8 means the activations are quantized too.
``fmt`` names the number format: ``int`` (default), ``fp8`` (e4m3), ``fp8e5m2``, ``nf4``, ``fp4``,
``nvfp4`` and the OCP Microscaling (MX) formats ``mxfp4``, ``mxfp6e2m3``, ``mxfp6e3m2``, ``mxfp8``
(e4m3 elements) and ``mxint8``. With quantized activations one format token names the activation
format, and the weights use it as well when its width equals ``W`` (``w8a8-fp8``), otherwise they are
integers (``w4a8-fp8`` is INT4 weights with FP8 activations). Two format tokens name the weight format,
then the activation format: ``w4a8-mxfp4-mxfp8`` (MXFP4 weights, MXFP8 activations, the W4A8 MX mix of
CDNA4 and Blackwell), ``w4a8-nvfp4-fp8``. ``g<N>`` is the group size (per-channel when absent), ``asym``
adds zero points, ``bf16``/``fp16`` picks the 16-bit compute type of a weight-only scheme, ``static``
asks for static per-tensor activation scales (default: dynamic per token), and ``kv<fmt>`` sets the
KV-cache format (``kvfp8``, ``kvfp8e5m2``, ``kvint8``, ``kvnvfp4``, ``kvq8_0`` ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from quantmatch.sdk.errors import InputError

__all__ = [
    "BASELINES",
    "GGUF_TYPES",
    "KV_FORMATS",
    "Scheme",
    "SchemeError",
    "parse_scheme",
]

BASELINES = ("fp32", "tf32", "fp16", "bf16")

GGUF_TYPES = (
    "f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q5_1", "q5_0", "q4_k_m", "q4_k_s",
    "q4_1", "q4_0", "iq4_nl", "iq4_xs", "nvfp4", "mxfp4", "mxfp4_moe", "q3_k_l", "q3_k_m", "q3_k_s", "iq3_m",
    "iq3_s", "iq3_xs", "iq3_xxs", "q2_k", "q2_k_s", "iq2_m", "iq2_s", "iq2_xs", "iq2_xxs", "q2_0", "tq2_0",
    "iq1_m", "iq1_s", "tq1_0", "q1_0",
)
"""llama.cpp tensor/file types quantmatch knows (lower case): the types ``llama-quantize`` offers
(ggml-org/llama.cpp tools/quantize/quantize.cpp QUANT_OPTIONS @03161a4e) and the ggml tensor type NVFP4
(``GGML_TYPE_NVFP4``, ggml/include/ggml.h)."""

GGUF_ALIASES = {"q3_k": "q3_k_m", "q4_k": "q4_k_m", "q5_k": "q5_k_m"}
"""``llama-quantize``'s aliases (QUANT_OPTIONS: "alias for Q4_K_M" ...)."""

GGUF_BITS: dict[str, float] = {
    # bits per weight including block scales (llama.cpp type sizes; k-quant mixes approximate)
    "f32": 32, "f16": 16, "bf16": 16, "q8_0": 8.5, "q6_k": 6.5625, "q5_k_m": 5.69, "q5_k_s": 5.54,
    "q5_1": 6.0, "q5_0": 5.5, "q4_k_m": 4.89, "q4_k_s": 4.58, "q4_1": 5.0, "q4_0": 4.5,
    "iq4_nl": 4.5, "iq4_xs": 4.25, "q3_k_l": 4.27, "q3_k_m": 3.91, "q3_k_s": 3.5, "iq3_s": 3.44,
    "iq3_xxs": 3.06, "q2_k": 3.35, "iq2_xs": 2.31, "iq2_xxs": 2.06, "tq2_0": 2.06, "tq1_0": 1.69,
    "mxfp4": 4.25,
    # llama-quantize's own bpw figures (QUANT_OPTIONS @03161a4e); nvfp4: 16 e2m1 elements + one e4m3 scale;
    # mxfp4_moe: MXFP4 experts (4.25), other tensors as the q8_0/f16 mix, counted as MXFP4 here;
    # q2_k_s: 2.96G vs Q2_K's 2.96G for Llama-3-8B there, so as Q2_K.
    "nvfp4": 4.5, "mxfp4_moe": 4.25, "iq3_m": 3.66, "iq3_xs": 3.3, "q2_k_s": 3.35, "iq2_m": 2.7,
    "iq2_s": 2.5, "q2_0": 2.25, "iq1_m": 1.75, "iq1_s": 1.56, "q1_0": 1.125,
}

KV_FORMATS = ("fp16", "bf16", "fp8", "fp8e5m2", "int8", "int4", "nvfp4", "q8_0", "q4_0")

# format token -> (bit width or None for any, canonical type stem)
_FORMATS: dict[str, tuple[int | None, str]] = {
    "int": (None, "int"),
    "fp8": (8, "fp8-e4m3"),
    "fp8e5m2": (8, "fp8-e5m2"),
    "nf4": (4, "nf4"),
    "fp4": (4, "fp4"),
    "nvfp4": (4, "nvfp4"),
    "mxfp4": (4, "mxfp4"),
    "mxfp6e2m3": (6, "mxfp6-e2m3"),
    "mxfp6e3m2": (6, "mxfp6-e3m2"),
    "mxfp8": (8, "mxfp8"),
    "mxint8": (8, "mxint8"),
}
_STEM_TOKEN = {v[1]: k for k, v in _FORMATS.items()}
_FORMAT_ALIASES = {"int8": "int", "int4": "int", "fp8e4m3": "fp8", "e4m3": "fp8", "e5m2": "fp8e5m2",
                   "mxfp8e4m3": "mxfp8"}
_WEIGHT_ONLY_FORMATS = {"nf4", "fp4"}  # bitsandbytes-style 4-bit storage formats; never activations
# Fixed block sizes: NVFP4 16 elements with an e4m3 scale; the OCP MX formats 32 elements with an e8m0 scale
# (OCP Microscaling Formats (MX) v1.0 spec, section 5).
_BLOCK = {"nvfp4": 16, "mxfp4": 32, "mxfp6-e2m3": 32, "mxfp6-e3m2": 32, "mxfp8": 32, "mxint8": 32}

EXAMPLES = (
    "w4a16-g128-asym", "w8a16", "w8a8-int8", "w8a8-int8-static", "w8a8-fp8", "w4a8-fp8",
    "w4a4-int4", "w4a4-nvfp4", "w4a16-nf4", "w8a16-fp8", "w4a4-mxfp4", "w6a6-mxfp6e2m3", "w4a8-mxfp4-mxfp8",
    "gguf-q4_k_m", "w4a16-g64-kvfp8", "bf16",
)


class SchemeError(InputError):
    """A scheme string that does not parse; the message lists the valid forms."""


def _fail(text: str, why: str) -> SchemeError:
    return SchemeError(
        f"invalid scheme {text!r}: {why}.\n"
        "Valid forms: fp32 | tf32 | fp16 | bf16 | gguf-<type> | "
        "w<W>a<A>[-<weight fmt>][-<fmt>][-g<N>][-asym][-bf16|-fp16][-static][-kv<fmt>]\n"
        f"Formats: {', '.join(_FORMATS)}\n"
        f"Examples: {', '.join(EXAMPLES)}\n"
        f"GGUF types: {', '.join(GGUF_TYPES)}; KV formats: {', '.join(KV_FORMATS)}"
    )


@dataclass(frozen=True, order=True)
class Scheme:
    """A requested precision.

    ``weight_format`` is ``int``, ``fp8-e4m3``, ``nf4``, ``fp4``, ``nvfp4``, ``mxfp4``, ``mxfp8``,
    ``gguf-<type>`` or an unquantized type (``fp32``/``tf32``/``fp16``/``bf16``).
    ``activation_format`` is ``None`` for weight-only schemes (then ``compute_dtype`` is the float
    type the math runs in) or the quantized activation format (``int``, ``fp8-e4m3``, ``nvfp4`` ...).
    ``group_size`` ``None`` means per-channel (or the format's fixed block).
    """

    weight_format: str
    weight_bits: int
    group_size: int | None = None
    symmetric: bool = True
    activation_format: str | None = None
    activation_bits: int = 16
    compute_dtype: str = "fp16"
    static_activations: bool = False
    kv_cache: str | None = None

    # ---- derived views used by the registry -------------------------------------------------
    @property
    def is_gguf(self) -> bool:
        return self.weight_format.startswith("gguf-")

    @property
    def is_baseline(self) -> bool:
        return self.weight_format in BASELINES

    @property
    def weight_only(self) -> bool:
        return self.activation_format is None

    @property
    def weight_type(self) -> str:
        """The stored weight type as the registry matches it: ``int4``, ``fp8-e4m3``, ``gguf-q4_k_m``, ``bf16``."""
        if self.weight_format == "int":
            return f"int{self.weight_bits}"
        return self.weight_format

    @property
    def activation_type(self) -> str | None:
        """The type the math sees on the activation side: ``int8``, ``fp8-e4m3``, ``fp16`` ...

        ``None`` for GGUF schemes, whose activation handling belongs to the runtime.
        """
        if self.is_gguf:
            return None
        if self.activation_format is None:
            return self.compute_dtype
        if self.activation_format == "int":
            return f"int{self.activation_bits}"
        return self.activation_format

    @property
    def bits_per_weight(self) -> float:
        """Storage bits per weight including scales and zero points (fp16 scales assumed)."""
        if self.is_gguf:
            return GGUF_BITS.get(self.weight_format[5:], 16.0)
        if self.is_baseline:
            return 32.0 if self.weight_format in ("fp32", "tf32") else 16.0
        bits = float(self.weight_bits)
        if self.weight_format in _BLOCK:
            scale_bits = 8.0  # e4m3 / e8m0 block scales
            return bits + scale_bits / _BLOCK[self.weight_format]
        if self.weight_format == "nf4" or self.weight_format == "fp4":
            return bits + 16.0 / 64  # bitsandbytes blocksize 64, fp32 absmax quantized to 8 bit ~ 0.127
        if self.group_size:
            return bits + (16.0 + (0.0 if self.symmetric else float(self.weight_bits))) / self.group_size
        return bits

    @property
    def kv_bits(self) -> float | None:
        if self.kv_cache is None:
            return None
        return {"fp16": 16, "bf16": 16, "fp8": 8, "fp8e5m2": 8, "int8": 8, "int4": 4, "nvfp4": 4.5, "q8_0": 8.5,
                "q4_0": 4.5}[self.kv_cache]

    @property
    def kv_type(self) -> str | None:
        """The KV-cache format as the registry matches it (``fp8-e4m3``, ``int8``, ``nvfp4`` ...)."""
        if self.kv_cache is None:
            return None
        return {"fp8": "fp8-e4m3", "fp8e5m2": "fp8-e5m2"}.get(self.kv_cache, self.kv_cache)

    # ---- string form ------------------------------------------------------------------------
    def __str__(self) -> str:
        return self._canonical

    @cached_property
    def _canonical(self) -> str:
        kv = f"-kv{self.kv_cache}" if self.kv_cache else ""
        if self.is_baseline:
            return self.weight_format + kv
        if self.is_gguf:
            return self.weight_format + kv
        parts = [f"w{self.weight_bits}a{self.activation_bits}"]
        stem = _STEM_TOKEN
        if self.activation_format is not None:
            width = _FORMATS[stem[self.activation_format]][0]
            implied = self.activation_format if width is None or width == self.weight_bits else "int"
            if self.weight_format != implied:
                parts.append(stem[self.weight_format])
            parts.append(f"int{self.activation_bits}" if self.activation_format == "int"
                         else stem[self.activation_format])
        elif self.weight_format != "int":
            parts.append(stem[self.weight_format])
        if self.group_size is not None and self.weight_format == "int":
            parts.append(f"g{self.group_size}")
        if not self.symmetric:
            parts.append("asym")
        if self.activation_format is None and self.activation_bits == 16 and self.compute_dtype == "bf16":
            parts.append("bf16")
        if self.static_activations:
            parts.append("static")
        return "-".join(parts) + kv

    @property
    def canonical(self) -> str:
        return str(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheme": str(self),
            "weight_type": self.weight_type,
            "weight_bits": self.weight_bits,
            "group_size": self.group_size,
            "symmetric": self.symmetric,
            "activation_type": self.activation_type,
            "weight_only": self.weight_only,
            "static_activations": self.static_activations,
            "kv_cache": self.kv_cache,
            "bits_per_weight": round(self.bits_per_weight, 4),
        }

    @classmethod
    def parse(cls, text: str) -> Scheme:
        return parse_scheme(text)


_WA = re.compile(r"^w(\d+)a(\d+)$")


def _split_kv(tokens: list[str], text: str) -> tuple[list[str], str | None]:
    kv = None
    rest = []
    for t in tokens:
        if t.startswith("kv"):
            if kv is not None:
                raise _fail(text, "more than one KV-cache token")
            kv = t[2:]
            kv = {"fp8e4m3": "fp8", "f16": "fp16", "int": "int8", "e5m2": "fp8e5m2"}.get(kv, kv)
            if kv not in KV_FORMATS:
                raise _fail(text, f"unknown KV-cache format {kv!r}")
        else:
            rest.append(t)
    return rest, kv


def _check_int_width(text: str, int_bits: int, w_bits: int, a_bits: int) -> None:
    """``-int8``/``-int4`` names the activation width (a8/a4) or, for weight-only schemes, the weights'."""
    if a_bits < 16 and int_bits != a_bits:
        raise _fail(text, f"-int{int_bits} contradicts a{a_bits} (the activations are {a_bits}-bit integers: "
                          f"write w{w_bits}a{a_bits}-int{a_bits})")
    if a_bits >= 16 and int_bits != w_bits:
        raise _fail(text, f"-int{int_bits} contradicts w{w_bits} (the weights are {w_bits}-bit integers: "
                          f"write w{w_bits}a{a_bits})")


def parse_scheme(text: str) -> Scheme:
    """Parse a scheme string (case-insensitive); raise :class:`SchemeError` listing valid forms."""
    if not isinstance(text, str) or not text.strip():
        raise _fail(str(text), "empty")
    s = text.strip().lower()
    tokens = s.split("-")
    if tokens[0] == "gguf":
        if len(tokens) < 2:
            raise _fail(text, "gguf needs a type")
        rest, kv = _split_kv(tokens[2:], text)
        if rest:
            raise _fail(text, f"unexpected {'-'.join(rest)!r} after the GGUF type")
        gtype = GGUF_ALIASES.get(tokens[1], tokens[1])
        if gtype not in GGUF_TYPES:
            raise _fail(text, f"unknown GGUF type {gtype!r}")
        bits = GGUF_BITS[gtype]
        return Scheme(weight_format=f"gguf-{gtype}", weight_bits=int(bits), activation_bits=16,
                      kv_cache=kv)
    rest, kv = _split_kv(tokens, text)
    if not rest:
        raise _fail(text, "no precision given")
    if rest[0] in BASELINES:
        if len(rest) > 1:
            raise _fail(text, f"unexpected {'-'.join(rest[1:])!r} after {rest[0]}")
        b = rest[0]
        return Scheme(weight_format=b, weight_bits=32 if b in ("fp32", "tf32") else 16,
                      activation_bits=32 if b in ("fp32", "tf32") else 16,
                      compute_dtype=b, kv_cache=kv)
    m = _WA.match(rest[0])
    if not m:
        raise _fail(text, f"{rest[0]!r} is not a baseline, gguf-<type> or w<W>a<A>")
    w_bits, a_bits = int(m.group(1)), int(m.group(2))
    if not 1 <= w_bits <= 8:
        raise _fail(text, f"weight bits must be 1-8, got {w_bits}")
    if a_bits not in (4, 6, 8, 16, 32):
        raise _fail(text, f"activation bits must be 4, 6, 8, 16 or 32, got {a_bits}")
    fmts: list[str] = []  # one: the format; two: the weights', then the activations'
    int_bits: int | None = None  # the width an explicit int4/int8 token (the last format token) names
    group: int | None = None
    symmetric: bool | None = None
    compute: str | None = None
    static: bool | None = None
    for raw in rest[1:]:
        tok = _FORMAT_ALIASES.get(raw, raw)
        if tok in ("mxfp6", "fp6"):
            raise _fail(text, f"{tok} needs its element type: mxfp6e2m3 or mxfp6e3m2")
        if tok in _FORMATS:
            if len(fmts) == 2:
                raise _fail(text, "more than two number formats (give the weights' format, then the activations')")
            fmts.append(tok)
            int_bits = int(raw[3:]) if raw.startswith("int") and raw != "int" else None
        elif re.fullmatch(r"g\d+", tok):
            if group is not None:
                raise _fail(text, "more than one group size")
            group = int(tok[1:])
            if group < 8 or group & (group - 1):
                raise _fail(text, f"group size must be a power of two >= 8, got {group}")
        elif tok in ("asym", "sym"):
            if symmetric is not None:
                raise _fail(text, "give -asym (or -sym) once")
            symmetric = tok == "sym"
        elif tok in ("bf16", "fp16"):
            if compute is not None:
                raise _fail(text, "give one compute type, -bf16 or -fp16, not both")
            compute = tok
        elif tok in ("static", "dynamic"):
            if static is not None:
                raise _fail(text, "give -static (or -dynamic) once")
            static = tok == "static"
        else:
            raise _fail(text, f"unknown token {tok!r}")
    if int_bits is not None and len(fmts) == 1:
        _check_int_width(text, int_bits, w_bits, a_bits)
    symmetric = True if symmetric is None else symmetric
    static = bool(static)
    weight_stem: str | None = None
    if len(fmts) == 2:
        if a_bits >= 16:
            raise _fail(text, "two formats name the weights' and the activations'; a weight-only scheme takes one")
        w_width, weight_stem = _FORMATS[fmts[0]]
        if w_width is not None and w_width != w_bits:
            raise _fail(text, f"{fmts[0]} weights are {w_width}-bit, not {w_bits}-bit")
        if int_bits is not None and int_bits != a_bits:
            raise _fail(text, f"-int{int_bits} contradicts a{a_bits}")
    fmt = fmts[-1] if fmts else "int"
    width, stem = _FORMATS[fmt]
    if a_bits < 16:
        if fmt in _WEIGHT_ONLY_FORMATS:
            raise _fail(text, f"{fmt} is a weight-only storage format; use w4a16-{fmt}")
        if width is not None and width != a_bits:
            raise _fail(text, f"{fmt} activations are {width}-bit, not {a_bits}-bit")
        if fmt == "int" and a_bits not in (4, 8):
            raise _fail(text, "integer activations are 4 or 8 bits")
        if a_bits == 6 and width != 6:
            raise _fail(text, "6-bit activations are MX FP6: write -mxfp6e2m3 or -mxfp6e3m2")
        act_format: str | None = stem
        weight_format = weight_stem or (stem if (width is None or width == w_bits) else "int")
        if compute is not None:
            raise _fail(text, f"-{compute} applies to weight-only schemes (a16)")
    else:
        if static:
            raise _fail(text, "-static applies to quantized activations (a8/a4)")
        if width is not None and width != w_bits:
            raise _fail(text, f"{fmt} weights are {width}-bit, not {w_bits}-bit")
        act_format = None
        weight_format = stem
        if a_bits == 32:
            if compute is not None:
                raise _fail(text, "a32 computes in fp32; drop the -bf16/-fp16 token")
            compute = "fp32"
    if weight_format != "int":
        if group is not None and weight_format not in _BLOCK:
            raise _fail(text, f"{weight_format} weights take no group size")
        if group is not None and weight_format in _BLOCK and group != _BLOCK[weight_format]:
            raise _fail(text, f"{weight_format} uses a fixed block of {_BLOCK[weight_format]}")
        group = None
        if not symmetric:
            raise _fail(text, "asymmetric (zero-point) quantization applies to integer weights")
    return Scheme(
        weight_format=weight_format,
        weight_bits=w_bits,
        group_size=group,
        symmetric=symmetric,
        activation_format=act_format,
        activation_bits=a_bits,
        compute_dtype=compute or ("fp16" if act_format is None else (act_format if act_format != "int"
                                                                      else f"int{a_bits}")),
        static_activations=static,
        kv_cache=kv,
    )
