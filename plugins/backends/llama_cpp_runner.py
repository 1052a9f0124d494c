"""llama.cpp through llama-cpp-python's C API: GGUF files on the CPU, several sequences per batch.

The runner loads the model with ``llama_model_load_from_file`` (no GPU layers) and makes its own
context with ``n_seq`` sequences of ``n_ctx`` tokens each (sized by :meth:`LlamaCppRunner.configure`),
``n_threads``/``n_threads_batch`` set explicitly and an F16 KV cache (llama.cpp's default, what
users run, and what ``quantmatch eval`` uses) unless the measurement asks for another KV format
(:attr:`~quantmatch.sdk.runner.MeasureConfig.kv_cache`: ``bf16``, ``q8_0``, ``q4_0`` set ``type_k`` and
``type_v``; a quantized V cache needs flash attention, which is then switched on explicitly, as llama.cpp's
``auto`` already does on the CPU). llama.cpp writes each batch's keys and values into the cache before
attention reads them back, so the chunked scoring of :meth:`LlamaCppRunner.logits` sees the quantized
cache from its first token. :meth:`LlamaCppRunner.kv_cache_bytes` is ``llama_state_seq_get_size`` summed
over the sequences in the cache (the cells' K/V rows, plus each cell's position and sequence ids: 12
bytes). Every sequence is a ``seq_id`` in one ``llama_batch``, so decoding ``batch`` sequences is one
``llama_decode`` per step; prompts longer than one batch are fed in pieces.
Tokens come from the GGUF's own tokenizer. A file llama.cpp cannot read raises :class:`RunnerError`
with the last lines of llama.cpp's log.

``verify``'s probe runs a synthetic two-layer Llama (hidden 1024, MLP 2816) converted to an F32 GGUF
and quantized per type on demand: the F32 file is the reference, both timed as a prefill of ``M``
tokens and as decode steps (llama.cpp has no single-layer entry point).
"""

from __future__ import annotations

import contextlib
import ctypes
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from quantmatch.plugins.backends.llama_cpp_compat import model_params
from quantmatch.sdk.runner import PROBE_SHAPE, MeasureConfig, Probe, Runner, RunnerError, UnreadableArtifactError
from quantmatch.sdk.scheme import Scheme

__all__ = ["LlamaCppRunner", "gguf_file", "gguf_weight_bytes"]

_MAX_SEQ = 8
_KV_TYPES = {"fp16": "GGML_TYPE_F16", "bf16": "GGML_TYPE_BF16", "q8_0": "GGML_TYPE_Q8_0", "q4_0": "GGML_TYPE_Q4_0"}
_GGML_BF16 = 30  # ggml.h's GGML_TYPE_BF16, which llama-cpp-python 0.3 does not export
_KV_VALUE_BYTES = {"fp16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
"""Bytes per cached value: Q8_0/Q4_0 blocks hold 32 values and one F16 scale (34 and 18 bytes)."""
_CHUNK = 512
_BATCH = 2048
_LOG: deque[str] = deque(maxlen=20)
_CALLBACK: Any = None


def gguf_file(target: str | Path) -> Path:
    """The ``.gguf`` file of a GGUF artifact directory (``model.gguf``) or the file itself."""
    p = Path(target)
    if p.is_dir():
        files = sorted(p.glob("*.gguf"))
        if not files:
            raise UnreadableArtifactError(f"{p}: no .gguf file in this directory; give a GGUF artifact or a .gguf file")
        return files[0]
    if not p.is_file():
        raise UnreadableArtifactError(f"{p}: no such GGUF file")
    return p


def gguf_weight_bytes(path: str | Path) -> int:
    """Tensor bytes one decode step reads: every tensor, less ``token_embd`` when the model has its own
    ``output.weight`` (then the embedding table is only indexed). Reads the header only."""
    from gguf import GGUFReader

    tensors = {t.name: int(t.n_bytes) for t in GGUFReader(str(path)).tensors}
    skip = tensors.get("token_embd.weight", 0) if "output.weight" in tensors else 0
    return sum(tensors.values()) - skip


def _quiet_log() -> None:
    """Route llama.cpp's log into a ring buffer (shown in errors) instead of stderr."""
    global _CALLBACK
    import llama_cpp

    if _CALLBACK is None:
        def on_log(level: int, text: bytes, user_data: Any) -> None:
            with contextlib.suppress(BaseException):  # never raise into C
                _LOG.append(text.decode("utf-8", errors="replace"))

        _CALLBACK = llama_cpp.llama_log_callback(on_log)
        llama_cpp.llama_log_set(_CALLBACK, ctypes.c_void_p(0))


class LlamaCppRunner(Runner):
    """GGUF models on llama.cpp's CPU backend (see the module docstring)."""

    requires = ("llama-cpp-python", "gguf")
    install = "pip install 'quantmatch[gguf]'"
    batches = True
    versioned: ClassVar[tuple[str, ...]] = ("llama-cpp-python", "gguf")
    kv_caches: ClassVar[tuple[str, ...]] = tuple(_KV_TYPES)

    def __init__(self, threads: int | None = None, backend: str = "llama.cpp", n_ctx: int = 2048,
                 n_seq: int = 4) -> None:
        super().__init__(threads, backend)
        self.n_ctx = n_ctx
        self.n_seq = min(max(n_seq, 1), _MAX_SEQ)
        self.path: Path | None = None
        self._model: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        self._vocab: Any = None
        self._n_vocab = 0
        self._pos: list[int] = []
        self._probe_ref: dict[int, tuple[float, float, int]] = {}

    # -- lifecycle --
    def configure(self, config: MeasureConfig) -> None:
        """Context per sequence for the window and the generation; ``batch`` sequences (llama.cpp sizes its
        attention buffers by both, so they are kept to what the measurement needs); the KV format."""
        super().configure(config)
        self.n_ctx = max(config.window, config.prompt, config.decode_start + config.warmup + config.new_tokens) + 16
        self.n_seq = min(max(config.batch, 1), _MAX_SEQ)

    def load(self, target: str | Path, dtype: str | None = None) -> None:
        import llama_cpp

        self.path = gguf_file(target)
        _quiet_log()
        llama_cpp.llama_backend_init()
        mparams = model_params(llama_cpp)
        _LOG.clear()
        model = llama_cpp.llama_model_load_from_file(str(self.path).encode("utf-8"), mparams)
        if not model:
            raise RunnerError(f"{self.path}: llama.cpp cannot load this GGUF file (truncated or corrupt?); "
                              f"re-create the artifact. llama.cpp said: {''.join(_LOG).strip()[-400:]}")
        self._model = model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_seq_max = self.n_seq
        cparams.n_ctx = self.n_ctx * self.n_seq
        cparams.n_batch = _BATCH
        cparams.n_ubatch = _CHUNK
        cparams.n_threads = cparams.n_threads_batch = self.threads
        cparams.no_perf = True
        kv = self.kv_cache or "fp16"
        flash = ""
        if self.kv_cache is not None:
            cparams.type_k = cparams.type_v = getattr(llama_cpp, _KV_TYPES[kv], _GGML_BF16)
            if kv in ("q8_0", "q4_0"):
                flash = ", flash attention"
                _enable_flash_attention(llama_cpp, cparams)
        ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            raise RunnerError(f"{self.path}: llama.cpp could not create a context with a {kv} KV cache "
                              f"({''.join(_LOG).strip()[-400:]})")
        self._ctx = ctx
        self._batch = llama_cpp.llama_batch_init(_BATCH, 0, 1)
        self.compute = f"llama.cpp CPU ({kv.upper().replace('FP16', 'F16')} KV cache{flash})"
        self.compute_dtype = "llama.cpp"

    def close(self) -> None:
        import llama_cpp

        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    # -- tokens --
    def tokenize(self, text: str) -> list[int]:
        import llama_cpp

        data = text.encode("utf-8")
        n = len(data) + 16
        buf = (llama_cpp.llama_token * n)()
        k = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, n, False, False)
        if k < 0:
            buf = (llama_cpp.llama_token * -k)()
            k = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, -k, False, False)
        return [int(t) for t in buf[:k]]

    def detokenize(self, ids: Sequence[int]) -> str:
        import llama_cpp

        out = bytearray()
        buf = ctypes.create_string_buffer(256)
        for t in ids:
            n = llama_cpp.llama_token_to_piece(self._vocab, int(t), buf, len(buf), 0, False)
            out += buf.raw[: max(n, 0)]
        return out.decode("utf-8", errors="replace")

    # -- decoding --
    def _decode(self, items: Sequence[tuple[int, int, int, bool]]) -> None:
        """One ``llama_decode`` of ``(token, position, sequence, wants logits)`` items."""
        import llama_cpp

        b = self._batch
        for i, (tok, pos, seq, logits) in enumerate(items):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = 1 if logits else 0
        b.n_tokens = len(items)
        rc = llama_cpp.llama_decode(self._ctx, b)
        if rc != 0:
            raise RunnerError(f"llama_decode failed with code {rc} (context full or out of memory?)")

    def _logits(self, i: int) -> Any:
        import llama_cpp
        import numpy as np

        ptr = llama_cpp.llama_get_logits_ith(self._ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))

    def _reset(self) -> None:
        import llama_cpp

        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)

    def logits(self, ids: Sequence[int]) -> Any:
        import llama_cpp
        import numpy as np

        if len(ids) > self.n_ctx:
            raise RunnerError(f"window of {len(ids)} tokens exceeds the context of {self.n_ctx}")
        self._reset()
        out = np.empty((len(ids), self._n_vocab), dtype=np.float32)
        for start in range(0, len(ids), _CHUNK):
            part = ids[start: start + _CHUNK]
            self._decode([(int(t), start + j, 0, True) for j, t in enumerate(part)])
            out[start: start + len(part)] = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx),
                                                                  shape=(len(part), self._n_vocab))
        return out

    def nll(self, ids: Sequence[int]) -> float:
        import llama_cpp
        import numpy as np

        if len(ids) > self.n_ctx:
            raise RunnerError(f"window of {len(ids)} tokens exceeds the context of {self.n_ctx}")
        self._reset()
        total = 0.0
        for start in range(0, len(ids) - 1, _CHUNK):
            part = ids[start: min(start + _CHUNK, len(ids) - 1)]
            self._decode([(int(t), start + j, 0, True) for j, t in enumerate(part)])
            every = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx), shape=(len(part), self._n_vocab))
            for a in range(0, len(part), 128):  # float64 in slices: no second copy of every logit
                rows = every[a: a + 128].astype(np.float64)
                m = rows.max(axis=1)
                lse = m + np.log(np.exp(rows - m[:, None]).sum(axis=1))
                targets = np.asarray(ids[start + a + 1: start + a + 1 + len(rows)])
                total += float((lse - rows[np.arange(len(rows)), targets]).sum())
        return total

    def prefill(self, prompts: Sequence[Sequence[int]]) -> list[int]:
        """One ``llama_decode`` for every prompt together when they fit one batch; longer prompts (a long
        ``context``) go sequence by sequence in batches of up to 2048 tokens."""
        items = [(int(t), j, s, j == len(p) - 1) for s, p in enumerate(prompts) for j, t in enumerate(p)]
        if len(prompts) > self.n_seq or max(len(p) for p in prompts) > self.n_ctx:
            raise RunnerError(f"at most {self.n_seq} sequences per prefill, each within the context of {self.n_ctx}")
        self._reset()
        self._pos = [len(p) for p in prompts]
        if len(items) <= _BATCH:
            self._decode(items)
            ends = [sum(len(q) for q in prompts[: s + 1]) - 1 for s in range(len(prompts))]
            return [int(self._logits(i).argmax()) for i in ends]
        out = []
        for s, p in enumerate(prompts):
            last = (len(p) - 1) // _BATCH * _BATCH  # where the batch holding the final token starts
            for start in range(0, len(p), _BATCH):
                part = p[start: start + _BATCH]
                self._decode([(int(t), start + j, s, start + j == len(p) - 1) for j, t in enumerate(part)])
            out.append(int(self._logits(len(p) - 1 - last).argmax()))
        return out

    def step(self, tokens: Sequence[int]) -> list[int]:
        self._decode([(int(t), self._pos[s], s, True) for s, t in enumerate(tokens)])
        self._pos = [p + 1 for p in self._pos]
        return [int(self._logits(s).argmax()) for s in range(len(tokens))]

    def cached_tokens(self, sequence: int = 0) -> int:
        import llama_cpp

        return int(llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(self._ctx), sequence)) + 1

    def weight_bytes_per_token(self) -> int:
        return gguf_weight_bytes(self.path) if self.path is not None else 0

    def kv_value_bytes(self, dtype: str | None = None) -> float:
        return _KV_VALUE_BYTES[self.kv_cache or "fp16"]  # the runtime's cache type, whatever the weights

    def kv_cache_bytes(self) -> int:
        import llama_cpp

        if self._ctx is None:
            return 0
        return sum(int(llama_cpp.llama_state_seq_get_size(self._ctx, s)) for s in range(self.n_seq)
                   if self.cached_tokens(s) > 0)

    # -- verify --
    @classmethod
    def probe_key(cls, method: str | None, scheme: Scheme) -> tuple[str | None, str]:
        if not scheme.is_gguf:
            return None, f"llama.cpp runs GGUF types, not {scheme}"
        if str(scheme) == "gguf-f32":
            return None, "F32 is the reference the GGUF probes compare against"
        return f"gguf:{scheme.weight_format.removeprefix('gguf-')}", ""

    def probe(self, key: str, workdir: Path, shape: tuple[int, int, int] = PROBE_SHAPE) -> Probe:
        from quantmatch.sdk.artifact import library_versions

        m = shape[0]
        gtype = key.partition(":")[2]
        ref = self._probe_ref.get(m)
        if ref is None:
            ref = self._probe_ref[m] = self._timings(workdir, "f32", m)
        rp, rd, rb = ref
        qp, qd, qb = self._timings(workdir, gtype, m)
        versions = ", ".join(f"{k} {v}" for k, v in library_versions(("llama-cpp-python", "gguf")).items())
        return Probe(f"llama.cpp {gtype.upper()} (2-layer model, hidden 1024, MLP 2816; {m}-token prefill)",
                     (m, 1024, 2816), rp, qp, rd, qd, rb, qb, versions)

    def _timings(self, workdir: Path, gtype: str, m: int) -> tuple[float, float, int]:
        """``(seconds for an m-token prefill, seconds per decode step, weight bytes)`` of the probe model."""
        import time

        from quantmatch.sdk.timing import time_best

        path = _probe_file(workdir, gtype, self.threads)
        r = LlamaCppRunner(self.threads, self.backend, n_ctx=m + 64)
        r.load(path)
        try:
            prompt = [[(7 * i) % 300 + 3 for i in range(m)]]
            pre = time_best(lambda: r.prefill(prompt), 0.2)

            def decode() -> float:  # only the 8 steps are timed, not the short prefill before them
                nxt = r.prefill([prompt[0][:8]])
                t0 = time.perf_counter()
                for _ in range(8):
                    nxt = r.step(nxt)
                return time.perf_counter() - t0

            decode()  # warm-up
            dec = min(decode() for _ in range(5)) / 8
            return pre, dec, gguf_weight_bytes(path)
        finally:
            r.close()


def _enable_flash_attention(llama_cpp: Any, cparams: Any) -> None:
    """Flash attention on, which a quantized V cache requires (the ``flash_attn_type`` field, or the
    ``flash_attn`` flag of older llama-cpp-python releases)."""
    fields = {f[0] for f in cparams._fields_}
    if "flash_attn_type" in fields:
        cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    elif "flash_attn" in fields:
        cparams.flash_attn = True


def _probe_file(root: Path, gtype: str, threads: int) -> Path:
    """The probe model as a GGUF of ``gtype`` under ``root`` (made on first use: a synthetic Llama saved by
    transformers, converted to F16/F32 by the GGUF method's converter, quantized by llama.cpp)."""
    from quantmatch.plugins.methods.gguf import quantize_gguf
    from quantmatch.plugins.methods.gguf_convert import OUT_TYPES, convert_hf_to_gguf

    out = root / f"{gtype}.gguf"
    if out.is_file():
        return out
    if gtype in OUT_TYPES:
        convert_hf_to_gguf(_probe_model(root), out, gtype)
    else:
        quantize_gguf(_probe_file(root, "f16", threads), out, gtype, threads=threads)
    return out


def _probe_model(root: Path) -> Path:
    hf = root / "hf"
    if not (hf / "config.json").is_file():
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        from quantmatch.sdk.synthetic import write_tiny_model

        write_tiny_model(hf)  # for its tokenizer; the weights are replaced below
        cfg = LlamaConfig(vocab_size=320, hidden_size=1024, intermediate_size=2816, num_hidden_layers=2,
                          num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=512,
                          bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
        torch.manual_seed(0)
        LlamaForCausalLM(cfg).save_pretrained(str(hf), safe_serialization=True)
    return hf
