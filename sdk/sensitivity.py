"""Per-unit sensitivity: how much the output's KL divergence grows when one weight tensor alone is quantized.

For mixed precision under a budget (:mod:`quantmatch.planner.mixed`): a method that mixes formats
(:attr:`quantmatch.sdk.quantizer.Quantizer.mixes`) yields every unit as each candidate format stores it
(:meth:`~quantmatch.sdk.quantizer.Quantizer.unit_variants`: exact bytes and dequantized weights); here the
float32 reference model scores a few hundred tokens of calibration text once, then for each variant the
one tensor is replaced by its dequantized values and the mean ``KL(P_ref || Q)`` of the next-token
distributions is measured, the rest of the model unquantized. A unit inside decoder layer ``i`` is
re-run from that layer's cached input only (layers before it are unchanged), so a variant costs on
average half a forward pass.

The table is cached as JSON under the user cache directory (``$QUANTMATCH_CACHE_DIR`` or the platform
cache dir, ``sensitivity/<key>.json``), keyed by the model's file hash, the method, the formats, the
text and the token count. Summing per-unit increases assumes they add up, which holds while each is
small (second-order terms are neglected); :mod:`quantmatch.planner.mixed` reports the sum as the
prediction, and ``quantmatch quantize --recipe`` compares it with the measured figure.

torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantmatch.sdk.artifact import atomic_write_json
from quantmatch.sdk.errors import InputError

__all__ = [
    "DEFAULT_SENSITIVITY_TEXT",
    "DEFAULT_SENSITIVITY_TOKENS",
    "MODES",
    "SensitivityError",
    "SensitivityTable",
    "UnitCost",
    "measure_sensitivity",
    "round_activation",
    "sensitivity_cache_path",
]

DEFAULT_SENSITIVITY_TOKENS = 256
"""Tokens scored per variant: enough to rank tensors (a few hundred), cheap on two cores."""

DEFAULT_SENSITIVITY_TEXT = "tiny-shakespeare"
"""The packaged calibration text, never the evaluation text (``tiny-shakespeare-heldout``)."""

MODES = ("anchored", "exact")
"""How each (unit, format) is priced: see :func:`measure_sensitivity`."""

_FORMAT = "quantmatch-sensitivity"
_VERSION = 2  # 2: the runtime's rounding of each product's input is part of a variant
ProgressFn = Callable[[str, int, int], None]


class SensitivityError(InputError):
    """A model whose sensitivity cannot be measured (no weights, a method that does not mix formats)."""


@dataclass(frozen=True)
class UnitCost:
    """One (unit, format): the bytes it takes and the mean KL divergence (nats/token) it adds alone."""

    unit: str
    hf_name: str
    scheme: str
    nbytes: int
    kld: float


@dataclass(frozen=True)
class SensitivityTable:
    """Every measured (unit, format) of one model; ``other_bytes`` is what no unit holds (a file's header,
    norms) so that an artifact's size is ``other_bytes`` plus its units' bytes. ``basis`` is
    ``measured`` or ``prior`` (no weights to measure: see :mod:`quantmatch.planner.mixed`). ``files`` and
    ``layouts`` describe the uniform artifacts the variants came from: each scheme's size in bytes and the
    variant each unit has there (for comparing a mix with the uniform schemes)."""

    model: str
    method: str
    schemes: tuple[str, ...]
    tokens: int
    text: str
    cache_key: str
    other_bytes: int
    entries: tuple[UnitCost, ...]
    basis: str = "measured"
    seconds: float = 0.0
    files: dict[str, int] = field(default_factory=dict)
    layouts: dict[str, dict[str, str]] = field(default_factory=dict)
    mode: str = "anchored"

    def units(self) -> list[str]:
        """Unit names in first-seen order."""
        return list(dict.fromkeys(e.unit for e in self.entries))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schemes"] = list(self.schemes)
        d["entries"] = [asdict(e) for e in self.entries]
        return {"format": _FORMAT, "version": _VERSION, **d}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SensitivityTable:
        if data.get("format") != _FORMAT or data.get("version") != _VERSION:
            raise SensitivityError("not a quantmatch sensitivity table of this version (delete the cached file "
                                   "and measure again)")
        body = {k: v for k, v in data.items() if k not in ("format", "version")}
        body["schemes"] = tuple(body["schemes"])
        body["entries"] = tuple(UnitCost(**e) for e in body["entries"])
        return cls(**body)

    def save(self, path: Path) -> None:
        """Write atomically (temporary file + rename)."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> SensitivityTable:
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


def _model_hash(source: Any) -> str:
    """sha256 of the model's weight files (the GGUF file itself for a GGUF input)."""
    if getattr(source, "gguf_path", None) is not None:
        files = [Path(source.gguf_path)]
    else:
        d = Path(source.hf_dir)
        files = sorted(f for f in d.iterdir() if f.suffix in (".safetensors", ".json"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def sensitivity_cache_path(key: str) -> Path:
    """Where the table with cache key ``key`` is kept."""
    from quantmatch.sdk.models import cache_root

    return Path(cache_root()) / "sensitivity" / f"{key}.json"


class _OneUnitKL:
    """The float32 reference on fixed tokens, and the mean KL of the model with one weight replaced."""

    def __init__(self, model: Any, ids: Sequence[int]) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.ids = torch.tensor([list(ids)], dtype=torch.long)
        self.params = dict(model.named_parameters())
        self.modules = dict(model.named_modules())
        self.tied = bool(getattr(model.config, "tie_word_embeddings", False))
        self.layers = list(model.model.layers)
        self.inputs: list[Any] = [None] * len(self.layers)
        self.kwargs: list[dict[str, Any]] = [{} for _ in self.layers]

        def grab(i: int) -> Callable[..., None]:
            def hook(_mod: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                self.inputs[i] = args[0] if args else kwargs["hidden_states"]
                self.kwargs[i] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            return hook

        self.linear_inputs: dict[str, Any] = {}

        def keep(name: str) -> Callable[..., None]:
            def hook(_mod: Any, args: tuple[Any, ...]) -> None:
                self.linear_inputs[name] = args[0][0].detach().clone()
            return hook

        handles = [layer.register_forward_pre_hook(grab(i), with_kwargs=True) for i, layer in enumerate(self.layers)]
        handles += [m.register_forward_pre_hook(keep(name + ".weight")) for name, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear) and name != "lm_head"]
        try:
            with torch.inference_mode():
                logits = model(self.ids, use_cache=False).logits[0]
        finally:
            for h in handles:
                h.remove()
        self.ref_logp = torch.log_softmax(logits.double(), dim=-1)
        self.ref_p = self.ref_logp.exp()

    def _layer_of(self, hf_name: str) -> int | None:
        parts = hf_name.split(".")
        if "layers" in parts:
            i = parts.index("layers")
            if i + 1 < len(parts) and parts[i + 1].isdigit():
                return int(parts[i + 1])
        return None

    def _kl(self, logits: Any) -> float:
        lq = self.torch.log_softmax(logits.double(), dim=-1)
        return float((self.ref_p * (self.ref_logp - lq)).sum(-1).mean())

    def _module_of(self, hf_name: str) -> str:
        """The linear layer whose input the runtime rounds for this weight ("" for a lookup-only embedding)."""
        name = hf_name.removesuffix(".weight")
        m = self.modules.get(name)
        if isinstance(m, self.torch.nn.Linear):
            return name
        if self.tied and isinstance(m, self.torch.nn.Embedding):
            return "lm_head"  # the tied embedding is also the output layer
        return ""

    def output_error(self, hf_name: str, weight: Any, activation: str = "") -> float | None:
        """``||(W' - W) X^T||^2`` over the calibration tokens: the energy of the change in the layer's output
        (``None`` for a weight that is not a linear layer's, such as the embedding)."""
        x = self.linear_inputs.get(hf_name)
        if x is None:
            return None
        torch = self.torch
        param = self.params[hf_name]
        new = torch.as_tensor(weight, dtype=param.dtype).reshape(param.shape)
        with torch.inference_mode():
            diff = round_activation(x, activation) @ new.T - x @ param.data.T
            return float(diff.double().pow(2).sum())

    def kld(self, hf_name: str, weight: Any, activation: str = "") -> float:
        """Mean KL divergence with parameter ``hf_name`` replaced by ``weight`` and its layer's input rounded as
        ``activation`` says (see :func:`round_activation`); restored afterwards."""
        torch = self.torch
        param = self.params.get(hf_name)
        if param is None:
            raise SensitivityError(f"the model has no parameter {hf_name!r}")
        new = torch.as_tensor(weight, dtype=param.dtype).reshape(param.shape)
        old = param.data
        param.data = new
        handle = None
        module = self.modules.get(self._module_of(hf_name))
        if activation and module is not None:
            handle = module.register_forward_pre_hook(
                lambda _m, args: (round_activation(args[0], activation), *args[1:]))
        try:
            with torch.inference_mode():
                layer = self._layer_of(hf_name)
                if layer is None:
                    return self._kl(self.model(self.ids, use_cache=False).logits[0])
                h = self.inputs[layer]
                for j in range(layer, len(self.layers)):
                    out = self.layers[j](h, **self.kwargs[j])
                    h = out[0] if isinstance(out, tuple) else out
                h = self.model.model.norm(h)
                return self._kl(self.model.lm_head(h)[0])
        finally:
            param.data = old
            if handle is not None:
                handle.remove()


def round_activation(x: Any, kind: str) -> Any:
    """``x`` (a torch tensor, features last) rounded as a runtime rounds a product's input: ``""`` unchanged,
    ``f16``/``bf16`` cast there and back, ``q8_0`` int8 in blocks of 32 with scale ``amax / 127`` stored in
    fp16 (llama.cpp ``quantize_row_q8_0_ref``), ``q8_k`` the same in blocks of 256 with a float scale
    (``quantize_row_q8_K_ref``). A last dimension the block does not divide is left unchanged."""
    import torch

    if not kind:
        return x
    if kind in ("f16", "bf16"):
        return x.to(torch.float16 if kind == "f16" else torch.bfloat16).to(x.dtype)
    block = {"q8_0": 32, "q8_1": 32, "q8_k": 256}.get(kind)
    if block is None:
        raise ValueError(f"unknown activation rounding {kind!r} (valid: f16, bf16, q8_0, q8_1, q8_k)")
    n = x.shape[-1]
    if n % block:
        return x
    xb = x.reshape(*x.shape[:-1], n // block, block)
    d = xb.abs().amax(-1, keepdim=True) / 127.0
    if block == 32:
        d = d.to(torch.float16).to(x.dtype)
    q = torch.round(xb / torch.where(d > 0, d, torch.ones_like(d))).clamp(-127, 127)
    return (q * d).reshape(x.shape)


def calibration_ids(tokenizer: Any, text: str, tokens: int) -> list[int]:
    """The first ``tokens`` token ids of ``text`` (no special tokens)."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(ids) < tokens:
        raise SensitivityError(f"the sensitivity text has {len(ids)} tokens, fewer than the {tokens} asked for "
                               "(give a longer text or fewer tokens)")
    return ids[:tokens]


def measure_sensitivity(source: Any, quantizer: Any, schemes: Sequence[str], *,
                        tokens: int = DEFAULT_SENSITIVITY_TOKENS, text: str | None = None,
                        threads: int | None = None, progress: ProgressFn | None = None,
                        cache: bool = True, mode: str = "anchored", **options: Any) -> SensitivityTable:
    """Measure (or read from the cache) every unit's KL increase under each of ``schemes``.

    ``source`` is a :class:`~quantmatch.sdk.models.ModelSource` with weights; ``quantizer`` an instance of
    a method with ``mixes`` (its :meth:`~quantmatch.sdk.quantizer.Quantizer.unit_variants` supplies the
    variants); ``text`` a packaged text name or file (default :data:`DEFAULT_SENSITIVITY_TEXT`);
    ``progress("sensitivity", done, total)`` per variant. Extra ``options`` go to ``unit_variants``.

    ``mode``: ``exact`` measures the KL of every (unit, format) with a forward pass; ``anchored`` (default,
    several times cheaper) measures it exactly for each unit's smallest format (its anchor) and for every
    format of weights that are not a linear layer's input (the embedding), and scales the anchor's KL for the
    unit's other formats by the ratio of output-error energies ``||(W' - W) X^T||^2`` on the same calibration
    activations (a second-order expansion: the KL grows with the square of the output's change).
    """
    from quantmatch.sdk.calibration import load_text

    if not getattr(quantizer, "mixes", False):
        raise SensitivityError(f"{getattr(quantizer, 'name', quantizer)!r} does not mix formats per unit; "
                               "choose a method whose plugin sets mixes = True (gguf)")
    if getattr(source, "no_weights", "") or getattr(source, "kind", "") in ("builtin", "config"):
        raise SensitivityError(f"{getattr(source, 'spec', source)}: no weights to measure "
                               f"({getattr(source, 'no_weights', '') or 'shapes only'})")
    if tokens < 8:
        raise ValueError("tokens must be at least 8")
    body, label = load_text(text or DEFAULT_SENSITIVITY_TEXT)
    schemes = tuple(str(s) for s in schemes)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    key_data = {"model": _model_hash(source), "method": quantizer.name, "schemes": sorted(schemes),
                "tokens": tokens, "text": hashlib.sha256(body.encode()).hexdigest(), "version": _VERSION,
                "mode": mode}
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:24]
    path = sensitivity_cache_path(key)
    if cache and path.is_file():
        try:
            return SensitivityTable.load(path)
        except (SensitivityError, KeyError, TypeError, ValueError):
            path.unlink(missing_ok=True)
    import torch

    started = time.perf_counter()
    if threads:
        torch.set_num_threads(int(threads))
    model, tokenizer = source.load("float32")
    scorer = _OneUnitKL(model, calibration_ids(tokenizer, body, tokens))
    stats: dict[str, Any] = {}
    entries: list[UnitCost] = []
    variants: Iterable[Any] = quantizer.unit_variants(source, schemes, stats=stats, threads=threads, **options)
    if mode == "exact":
        for v in variants:
            entries.append(UnitCost(v.unit, v.hf_name, v.scheme, int(v.nbytes),
                                    max(scorer.kld(v.hf_name, v.weight, v.activation), 0.0)))
            if progress is not None:
                progress("sensitivity", len(entries), 0)
    else:
        entries = _anchored(scorer, variants, progress)
    if not entries:
        raise SensitivityError(f"{quantizer.name} yielded no unit of {getattr(source, 'spec', source)} for "
                               f"{', '.join(schemes)}")
    table = SensitivityTable(model=str(getattr(source, "spec", source)), method=quantizer.name, schemes=schemes,
                             tokens=tokens, text=label, cache_key=key, other_bytes=int(stats.get("other_bytes", 0)),
                             entries=tuple(entries), seconds=round(time.perf_counter() - started, 1),
                             files=dict(stats.get("files", {})), layouts=dict(stats.get("layouts", {})),
                             mode=mode)
    if cache:
        table.save(path)
    return table


def _anchored(scorer: _OneUnitKL, variants: Iterable[Any], progress: ProgressFn | None) -> list[UnitCost]:
    """Exact KL at each unit's smallest variant (and for every variant of a non-linear weight), the others
    scaled by their output-error energy relative to the anchor's."""
    energy: dict[tuple[str, str], float] = {}
    exact: dict[tuple[str, str], float] = {}
    smallest: dict[str, Any] = {}
    order: list[Any] = []
    for v in variants:
        e = scorer.output_error(v.hf_name, v.weight, v.activation)
        if e is None:
            exact[(v.unit, v.scheme)] = max(scorer.kld(v.hf_name, v.weight, v.activation), 0.0)
        else:
            energy[(v.unit, v.scheme)] = e
            cur = smallest.get(v.unit)
            if cur is None or (v.nbytes, v.scheme) < (cur.nbytes, cur.scheme):
                smallest[v.unit] = v
        order.append((v.unit, v.hf_name, v.scheme, int(v.nbytes)))
        if progress is not None:
            progress("variants", len(order), 0)
    for i, (unit, v) in enumerate(sorted(smallest.items())):
        exact[(unit, v.scheme)] = max(scorer.kld(v.hf_name, v.weight, v.activation), 0.0)
        if progress is not None:
            progress("sensitivity", i + 1, len(smallest))
    out = []
    for unit, hf_name, scheme, nbytes in order:
        if (unit, scheme) in exact:
            kld = exact[(unit, scheme)]
        else:
            anchor = smallest[unit]
            e0 = energy[(unit, anchor.scheme)]
            kld = exact[(unit, anchor.scheme)] * energy[(unit, scheme)] / e0 if e0 > 0 else 0.0
        out.append(UnitCost(unit, hf_name, scheme, nbytes, kld))
    return out
