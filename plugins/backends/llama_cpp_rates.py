"""llama.cpp's CPU kernel rates on this machine, per GGUF type, for the planner (``LlamaCppBackend.rate_probe``).

The model is a synthetic Llama with ``verify``'s layer shapes (hidden 1024, MLP 2816, 320-token
vocabulary) and :data:`LAYERS` layers: 135M linear weights, the size of SmolLM2-135M, 144 MB at Q8_0
and 40-80 MB at 2-4 bits: beyond the last-level cache of most CPUs, so the weights stream from memory
as a real model's do (the same model with 2 layers, 23 MB, decoded 1.5-2x faster per weight on a
Sapphire Rapids core: the cache, not the kernel). It is converted to F32/F16/BF16 and quantized by
llama.cpp to each type of :data:`PROBE_TYPES` once (cached under the probe's work folder, per
llama-cpp-python version). Each file is loaded by :class:`~.llama_cpp_runner.LlamaCppRunner`, the
runner quantmatch measures with, so the extra (repacking) buffer types follow the same policy
(:mod:`.llama_cpp_compat`), and timed:

- decode: 8 single-token ``llama_decode`` steps after an 8-token prompt (best of 3). The per-step time
  of the 2-layer tiny model of :func:`quantmatch.sdk.synthetic.write_tiny_model` (hidden 64: nothing
  but dispatch) is subtracted, so the rate is the GEMV's and the planner's per-layer and per-step
  overhead priors are not counted twice;
- prefill: one :data:`PREFILL`-token ``llama_decode`` (best of 2): the GEMM rate.

The rate is the model's linear weights (the token embedding is a lookup and is left out) over the time.
Mixes (Q4_K_M ...) are probed as llama.cpp builds them for this model, so their rate is the mix's. Types
not probed map to the probed type of the nearest kernel family (:data:`ALIASES`).
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quantmatch.sdk.kernel_rates import KernelRate, RateProbeResult, clock_fn

__all__ = ["ALIASES", "PREFILL", "PROBE_TYPES", "probe_rates"]

PROBE_TYPES = ("f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_1", "q5_0", "q4_k_m", "q4_k_s", "q4_1",
               "q4_0", "iq4_nl", "q3_k_m", "q2_k")
"""The GGUF types timed (``iq4_nl`` is the fallback of the 2- and 3-bit k-quants for rows that are not
a multiple of 256 wide)."""
ALIASES = {"q5_k_s": "q5_k_m", "q3_k_s": "q3_k_m", "q3_k_l": "q3_k_m", "iq4_xs": "iq4_nl", "q8_k": "q8_0"}
"""Types not timed -> the timed type of the same kernel family (same vec_dot, different mix or block)."""
LAYERS = 12
PREFILL = 128
_STEPS = 8


def _quantized(root: Path, gtype: str, threads: int) -> Path:
    """The probe model as a GGUF of ``gtype`` (``verify``'s files; ``iq4_nl``, which quantmatch's GGUF method
    does not write, by ``llama_model_quantize`` directly)."""
    from quantmatch.plugins.methods.gguf import _FTYPE_NAMES, quantize_gguf
    from quantmatch.plugins.methods.gguf_convert import OUT_TYPES, convert_hf_to_gguf

    out = root / f"{gtype}.gguf"
    if out.is_file():
        return out
    tmp = root / f"{gtype}.tmp.gguf"
    if gtype in OUT_TYPES:
        convert_hf_to_gguf(_model(root), tmp, gtype)
        tmp.replace(out)
        return out
    src = _quantized(root, "f16", threads)
    if gtype in _FTYPE_NAMES:
        quantize_gguf(src, tmp, gtype, threads=threads)
        tmp.replace(out)
        return out
    import llama_cpp

    _quiet()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{gtype.upper()}")
    params.nthread = max(1, threads)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"llama.cpp could not quantize the probe model to {gtype} (code {rc})")
    tmp.replace(out)
    return out


def _quiet() -> None:
    """llama.cpp's log into the runner's ring buffer, again: the GGUF method's quantizer installs its own
    callback while it runs and leaves llama.cpp's default (stderr) behind."""
    import ctypes

    import llama_cpp

    from quantmatch.plugins.backends import llama_cpp_runner as lr

    lr._quiet_log()
    if lr._CALLBACK is not None:
        llama_cpp.llama_log_set(lr._CALLBACK, ctypes.c_void_p(0))


def _model(root: Path) -> Path:
    """The probe model saved by transformers (random weights; the tokenizer of the tiny model)."""
    hf = root / "hf"
    if not (hf / "model.safetensors").is_file() and not (hf / "model.safetensors.index.json").is_file():
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        from quantmatch.sdk.synthetic import write_tiny_model

        write_tiny_model(hf)  # for its tokenizer; the weights are replaced below
        cfg = LlamaConfig(vocab_size=320, hidden_size=1024, intermediate_size=2816, num_hidden_layers=LAYERS,
                          num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=512,
                          bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
        torch.manual_seed(0)
        LlamaForCausalLM(cfg).save_pretrained(str(hf), safe_serialization=True)
    return hf


def _tiny(root: Path) -> Path:
    """The dispatch-only model: the 2-layer, 64-wide tiny Llama as an F32 GGUF."""
    from quantmatch.plugins.methods.gguf_convert import convert_hf_to_gguf
    from quantmatch.sdk.synthetic import write_tiny_model

    out = root / "tiny-f32.gguf"
    if not out.is_file():
        hf = write_tiny_model(root / "tiny-hf")
        tmp = root / "tiny-f32.tmp.gguf"
        convert_hf_to_gguf(hf, tmp, "f32")
        tmp.replace(out)
    return out


def _linear_weights(path: Path) -> int:
    """Weights of the model's 2-D tensors other than the token embedding (what a token multiplies)."""
    from gguf import GGUFReader

    return sum(int(t.n_elements) for t in GGUFReader(str(path)).tensors
               if len(t.shape) == 2 and not t.name.startswith("token_embd"))


def _time(path: Path, threads: int, now: Callable[[], float]) -> tuple[float, float]:
    """``(seconds per decode step, seconds of a PREFILL-token prefill)``."""
    from quantmatch.plugins.backends.llama_cpp_runner import LlamaCppRunner

    _quiet()
    r = LlamaCppRunner(threads, n_ctx=PREFILL + 32, n_seq=1)
    r.load(path)
    try:
        rng = random.Random(0)
        prompt = [rng.randrange(3, 300) for _ in range(PREFILL)]

        def decode() -> float:
            nxt: Any = r.prefill([prompt[:8]])
            t0 = now()
            for _ in range(_STEPS):
                nxt = r.step(nxt)
            return (now() - t0) / _STEPS

        def prefill() -> float:
            t0 = now()
            r.prefill([prompt])
            return now() - t0

        decode()  # warm-up: first-call allocations, repacking
        step = min(decode() for _ in range(3))
        pre = min(prefill() for _ in range(2))
        return step, pre
    finally:
        r.close()


def probe_rates(threads: int, clock: str, workdir: Path) -> RateProbeResult:
    """GEMV and GEMM rates of every :data:`PROBE_TYPES` type at ``threads`` threads, timed on ``clock``;
    the probe files are made once in ``workdir``."""
    import llama_cpp

    from quantmatch.plugins.backends.llama_cpp_compat import extra_buffer_types_enabled

    workdir.mkdir(parents=True, exist_ok=True)
    now = clock_fn(clock)
    files = {gtype: _quantized(workdir, gtype, threads) for gtype in PROBE_TYPES}  # made once, then timed
    shutil.rmtree(workdir / "hf", ignore_errors=True)  # 540 MB only the conversions read
    base, _ = _time(_tiny(workdir), threads, now)
    repack = "with" if extra_buffer_types_enabled() else "without"
    out = []
    for gtype, path in files.items():
        n = _linear_weights(path)
        step, pre = _time(path, threads, now)
        gemv_s = max(step - base * LAYERS / 2, 0.5 * step)  # the tiny model's dispatch, per layer
        out.append(KernelRate(
            "llama.cpp", "cpu", f"gguf-{gtype}", n / gemv_s, 2.0 * n * PREFILL / pre, threads, (PREFILL, n, 0),
            f"llama-cpp-python {llama_cpp.__version__}, {LAYERS}-layer synthetic Llama ({n} linear weights), "
            f"{repack} extra buffer types; decode step {step * 1e3:.3g} ms less "
            f"{base * LAYERS / 2 * 1e3:.2g} ms dispatch; "
            f"{clock} clock"))
    aliases = {f"gguf-{k}": f"gguf-{v}" for k, v in ALIASES.items()}
    return RateProbeResult(tuple(out), aliases)
