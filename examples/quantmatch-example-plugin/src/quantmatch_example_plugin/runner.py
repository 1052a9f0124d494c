"""The ``example-torch`` runner: how quantmatch runs an ``example-int8`` artifact (``bench``, ``eval``, ``verify``).

The backend names this class lazily (``ExampleTorchBackend.runner``), so quantmatch imports this module
only when something runs; torch is imported inside the methods, never at module level. The runner
implements quantmatch's runner contract (:class:`quantmatch.sdk.Runner`):

- ``load``: the artifact through the method's own loader (:func:`.int8_torch.load`), in eval mode;
- ``tokenize``/``detokenize``: the tokenizer saved beside the weights;
- ``logits`` (and a cheaper ``nll``): one forward pass over a window from an empty context;
- ``prefill``/``step``: greedy generation through transformers' ``DynamicCache``;
- ``probe_key``/``probe``: ``verify``'s micro-benchmark, one :class:`.int8_torch.Int8Linear` against an
  fp32 ``nn.Linear`` of the same shape (what the backend's ``weight-only`` claim is checked against).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from quantmatch.sdk import Probe, Runner, Scheme
from quantmatch.sdk.runner import PROBE_SHAPE, RunnerError

from .int8 import FORMAT, ExampleInt8Quantizer

__all__ = ["ExampleTorchRunner"]


class ExampleTorchRunner(Runner):
    """``example-int8`` artifacts on PyTorch eager (CPU), weights dequantized per layer call."""

    requires: ClassVar[tuple[str, ...]] = ("torch", "transformers", "safetensors")
    install = "pip install 'quantmatch[torch]'"
    batches = True
    versioned: ClassVar[tuple[str, ...]] = ("torch", "transformers", "safetensors", "quantmatch-example-plugin")

    def __init__(self, threads: int | None = None, backend: str = "example-torch") -> None:
        super().__init__(threads, backend)
        self.model: Any = None
        self.tokenizer: Any = None
        self._cache: Any = None

    # -- loading --
    def load(self, target: str | Path, dtype: str | None = None) -> None:
        import torch

        from . import int8_torch

        torch.set_num_threads(self.threads)
        path = Path(target)
        if not (path / int8_torch.MANIFEST_FILE).is_file():
            raise RunnerError(f"{path}: not an {FORMAT} artifact (no {int8_torch.MANIFEST_FILE}); write one with "
                              f"`quantmatch quantize MODEL --method {ExampleInt8Quantizer.name} --scheme w8a32 "
                              "--out DIR`")
        self.model, self.tokenizer = int8_torch.load(path, dtype or "float32")
        if self.tokenizer is None:
            raise RunnerError(f"{path}: the artifact has no tokenizer files; re-create it from a model directory "
                              "that has them")
        self.compute = str(next(self.model.parameters()).dtype).removeprefix("torch.") + " (int8 weights dequantized)"

    def close(self) -> None:
        self.model = self._cache = None

    # -- tokens and scores --
    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def detokenize(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids)))

    def logits(self, ids: Sequence[int]) -> Any:
        import torch

        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([list(ids)], dtype=torch.long), use_cache=False).logits[0]
        return out.float().numpy()

    def nll(self, ids: Sequence[int]) -> float:
        import torch

        chunk = torch.tensor(list(ids), dtype=torch.long)
        with torch.no_grad():
            logits = self.model(input_ids=chunk[None], use_cache=False).logits[0, :-1].float()
            return float(torch.nn.functional.cross_entropy(logits, chunk[1:], reduction="sum"))

    # -- generation --
    def _forward(self, ids: Any) -> list[int]:
        import torch

        with torch.no_grad():
            out = self.model(input_ids=ids, past_key_values=self._cache, use_cache=True, logits_to_keep=1)
        self._cache = out.past_key_values
        return [int(t) for t in out.logits[:, -1].argmax(-1)]

    def prefill(self, prompts: Sequence[Sequence[int]]) -> list[int]:
        import torch
        from transformers import DynamicCache

        self._cache = DynamicCache()
        return self._forward(torch.tensor([list(p) for p in prompts], dtype=torch.long))

    def step(self, tokens: Sequence[int]) -> list[int]:
        import torch

        return self._forward(torch.tensor([[t] for t in tokens], dtype=torch.long))

    def cached_tokens(self, sequence: int = 0) -> int:
        return int(self._cache.get_seq_length()) if self._cache is not None else 0

    def weight_bytes_per_token(self) -> int:
        """The int8 codes, their scales and every other tensor, less the input embedding table (one row of
        it is read per token) unless the LM head shares it."""
        if self.model is None:
            return 0
        emb = self.model.get_input_embeddings().weight
        head = self.model.get_output_embeddings()
        tied = head is not None and head.weight.data_ptr() == emb.data_ptr()
        tensors = {t.data_ptr(): t for t in [*self.model.parameters(), *self.model.buffers()]}
        if not tied:
            tensors.pop(emb.data_ptr(), None)
        return sum(int(t.numel() * t.element_size()) for t in tensors.values())

    # -- verify --
    @classmethod
    def probe_key(cls, method: str | None, scheme: Scheme) -> tuple[str | None, str]:
        if method != ExampleInt8Quantizer.name:
            return None, f"example-torch runs only {ExampleInt8Quantizer.name} artifacts"
        return f"int8-linear:{scheme.compute_dtype}", ""

    def probe(self, key: str, workdir: Path, shape: tuple[int, int, int] = PROBE_SHAPE) -> Probe:
        """One :class:`.int8_torch.Int8Linear` (per-channel int8, dequantized per call) against a dense
        ``nn.Linear`` of the same weights computing in the same float type (fp32 or bf16: a weight-only
        scheme saves bytes against the dense layer of its own math, it does not compute faster), at ``M``
        rows and at one row."""
        import torch

        from quantmatch.sdk.artifact import library_versions
        from quantmatch.sdk.timing import time_pair

        from .int8_torch import Int8Linear

        torch.set_num_threads(self.threads)
        math = key.partition(":")[2]
        dtype = torch.bfloat16 if math == "bf16" else torch.float32
        m, k, n = shape
        torch.manual_seed(0)
        dense = torch.nn.Linear(k, n, bias=False).eval()
        q = Int8Linear.quantized(dense).eval()
        dense = dense.to(dtype)
        x, x1 = torch.randn(m, k, dtype=dtype), torch.randn(1, k, dtype=dtype)
        with torch.no_grad():
            timings = time_pair(dense, q, x, x1)
        ref_bytes = dense.weight.numel() * dense.weight.element_size()
        q_bytes = q.qweight.numel() * q.qweight.element_size() + q.scale.numel() * q.scale.element_size()
        versions = ", ".join(f"{name} {v}" for name, v in library_versions(("torch",)).items())
        return Probe(f"example-int8 Int8Linear against a dense {math} layer (dequantized per call)", shape,
                     *timings, ref_bytes, q_bytes, versions)
