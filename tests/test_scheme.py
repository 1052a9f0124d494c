"""The canonical scheme grammar: round trips, derived views and rejections."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantmatch.sdk.scheme import EXAMPLES, GGUF_TYPES, Scheme, SchemeError, parse_scheme

CANONICAL = [
    "w4a16-g128-asym", "w8a8-int8", "w8a8-fp8", "w4a8-fp8", "w4a4-int4", "w4a4-nvfp4", "gguf-q4_k_m",
    "w4a16-g128-asym-kvfp8", "w8a16", "w8a16-fp8", "w4a16-nf4", "w8a8-int8-static", "w4a16-g64-bf16",
    "w4a32-g32", "w4a8-int8-g32", "w4a4-mxfp4", "w4a16-mxfp4", "bf16", "fp16-kvnvfp4", "gguf-q8_0-kvq8_0",
    "w3a16-g64-asym", "w2a16-g16-asym", "fp32", "tf32",
]


@pytest.mark.parametrize("text", CANONICAL + list(EXAMPLES))
def test_canonical_forms_round_trip(text: str) -> None:
    s = parse_scheme(text)
    assert str(s) == text
    assert parse_scheme(str(s)) == s


@pytest.mark.parametrize(("alias", "canonical"), [
    ("W4A16-asym-g128", "w4a16-g128-asym"),
    ("w4a16-int-g128-sym", "w4a16-g128"),
    ("w8a8-int", "w8a8-int8"),
    ("w8a8", "w8a8-int8"),
    ("w8a8-int8-dynamic", "w8a8-int8"),
    ("w8a8-fp8e4m3", "w8a8-fp8"),
    ("w4a16-fp16-g64", "w4a16-g64"),
    ("w4a16-g128-kvf16", "w4a16-g128-kvfp16"),
])
def test_spellings_normalise(alias: str, canonical: str) -> None:
    assert str(parse_scheme(alias)) == canonical


def test_derived_views() -> None:
    s = parse_scheme("w4a8-fp8")
    assert (s.weight_type, s.activation_type, s.weight_only) == ("int4", "fp8-e4m3", False)
    s = parse_scheme("w8a8-fp8")
    assert (s.weight_type, s.activation_type) == ("fp8-e4m3", "fp8-e4m3")
    s = parse_scheme("w4a16-g128-asym")
    assert (s.weight_type, s.activation_type, s.group_size, s.symmetric) == ("int4", "fp16", 128, False)
    assert s.bits_per_weight == pytest.approx(4 + (16 + 4) / 128)
    assert parse_scheme("w4a16-g128").bits_per_weight == pytest.approx(4.125)
    assert parse_scheme("w4a4-nvfp4").weight_type == "nvfp4"
    g = parse_scheme("gguf-q4_k_m")
    assert g.is_gguf and g.activation_type is None and g.bits_per_weight == pytest.approx(4.89)
    assert parse_scheme("bf16").activation_type == "bf16"
    assert parse_scheme("fp16-kvfp8").kv_type == "fp8-e4m3"


@pytest.mark.parametrize("bad", [
    "", "w4", "int4", "w9a16", "w4a12", "w4a16-g100", "w4a16-g128-g64", "gguf-q9_k", "gguf",
    "w8a8-nf4", "w4a16-fp8", "w8a8-fp8-asym", "w4a16-kvfp7", "w8a16-static", "w8a8-int8-bf16",
    "w4a4-nvfp4-g32", "w8a16-fp8-g128", "bf16-g64", "nonsense", "w4a16-foo",
])
def test_nonsense_is_rejected_with_the_valid_forms(bad: str) -> None:
    with pytest.raises(SchemeError) as e:
        parse_scheme(bad)
    msg = str(e.value)
    assert "Valid forms" in msg and "w4a16-g128-asym" in msg and "gguf-q4_k_m" in msg


@pytest.mark.parametrize(("bad", "why"), [
    ("w4a4-int8", "-int8 contradicts a4"),
    ("w8a8-int4", "-int4 contradicts a8"),
    ("w8a16-int4", "-int4 contradicts w8"),
    ("w4a16-bf16-fp16", "-bf16 or -fp16, not both"),
    ("w4a16-g128-asym-sym", "-asym (or -sym) once"),
    ("w8a8-int8-static-dynamic", "-static (or -dynamic) once"),
])
def test_contradictions_are_rejected(bad: str, why: str) -> None:
    with pytest.raises(SchemeError) as e:
        parse_scheme(bad)
    assert why in str(e.value) and "Valid forms" in str(e.value)


def test_explicit_integer_width_that_agrees_is_accepted() -> None:
    assert str(parse_scheme("w8a16-int8")) == "w8a16"
    assert str(parse_scheme("w4a16-int4-g64")) == "w4a16-g64"
    assert str(parse_scheme("w4a8-int8-g32")) == "w4a8-int8-g32"


_tokens = st.lists(st.sampled_from([
    "int", "fp8", "nf4", "fp4", "nvfp4", "mxfp4", "mxfp8", "g32", "g64", "g128", "asym", "sym", "bf16",
    "fp16", "static", "dynamic", "kvfp8", "kvint8", "kvnvfp4"]), max_size=4)


@settings(max_examples=400, deadline=None)
@given(w=st.integers(1, 8), a=st.sampled_from([4, 8, 16, 32]), tokens=_tokens)
def test_anything_that_parses_round_trips(w: int, a: int, tokens: list[str]) -> None:
    text = "-".join([f"w{w}a{a}", *tokens])
    try:
        s = parse_scheme(text)
    except SchemeError:
        return
    assert parse_scheme(str(s)) == s
    assert str(parse_scheme(str(s))) == str(s)


@pytest.mark.parametrize("t", GGUF_TYPES)
def test_every_gguf_type_parses(t: str) -> None:
    assert str(parse_scheme(f"gguf-{t}")) == f"gguf-{t}"


def test_scheme_parse_classmethod() -> None:
    assert Scheme.parse("w8a8-int8") == parse_scheme("w8a8-int8")
