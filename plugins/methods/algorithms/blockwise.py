"""Calibration one decoder block at a time.

Only the current block's calibration activations (and whatever statistics a method keeps for it)
are in memory: the token samples are embedded once, stopped at the first block, and each block's
outputs become the next block's inputs. Peak memory is the model plus about two copies of
``samples x seq_len x hidden`` floats, independent of the number of layers.

The decoder's own forward prepares what every block receives besides the hidden states (rotary
embeddings, the causal mask, positions); those keyword arguments are captured at the first block
and passed unchanged to every block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "BlockBatch",
    "BlockFn",
    "ProgressFn",
    "block_output",
    "blocks_prefix",
    "capture_block_inputs",
    "decoder_blocks",
    "forward_until",
    "input_hooks",
    "linear_modules",
    "run_block",
    "run_blockwise",
]

ProgressFn = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called after each block with stage ``quantize``."""


@dataclass
class BlockBatch:
    """One micro-batch of calibration activations entering a block, with the block's other arguments."""

    hidden: Tensor
    kwargs: dict[str, Any]


class _Captured(Exception):
    """Raised by a hook to stop a forward pass once it has what it needs."""


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a Llama-family causal LM (``model.model.layers``)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        raise ValueError(f"{type(model).__name__} has no model.layers: blockwise calibration supports the "
                         "Llama family (Llama, Mistral, Qwen2/3, SmolLM)")
    return layers


def blocks_prefix(model: nn.Module) -> str:
    """The module name of the decoder layer list (``model.layers``): block ``i`` is ``{prefix}.{i}``."""
    blocks = decoder_blocks(model)
    name: str = next(n for n, m in model.named_modules() if m is blocks)
    return name


def linear_modules(block: nn.Module) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` inside ``block`` by its name relative to the block."""
    return {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}


@torch.no_grad()
def capture_block_inputs(model: nn.Module, samples: Tensor, batch_size: int = 8) -> list[BlockBatch]:
    """Embed ``samples [n, seq_len]`` and return what enters the first block, in micro-batches."""
    first = decoder_blocks(model)[0]
    batches: list[BlockBatch] = []

    def grab(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        batches.append(BlockBatch(hidden.detach(), {k: v for k, v in kwargs.items() if k != "hidden_states"}))
        raise _Captured

    handle = first.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for chunk in torch.split(samples, batch_size):
            with contextlib.suppress(_Captured):
                model(input_ids=chunk, use_cache=False)
    finally:
        handle.remove()
    return batches


def block_output(out: Any) -> Tensor:
    """The hidden states a decoder block returned (some transformers versions return a tuple)."""
    hidden: Tensor = out[0] if isinstance(out, (tuple, list)) else out
    return hidden


@torch.no_grad()
def run_block(block: nn.Module, batches: Sequence[BlockBatch]) -> list[BlockBatch]:
    """The block's outputs for every micro-batch (the next block's inputs)."""
    return [BlockBatch(block_output(block(b.hidden, **b.kwargs)), b.kwargs) for b in batches]


@contextlib.contextmanager
def input_hooks(modules: Mapping[str, nn.Module], record: Callable[[str, Tensor], None],
                stop_after: str | None = None) -> Iterator[None]:
    """Call ``record(name, input)`` for each module's input during forwards inside the block.

    With ``stop_after``, the forward is cut short right after that module's input is recorded (use
    :func:`forward_until` to run it): nothing downstream is computed.
    """

    def make(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            record(name, args[0].detach())
            if name == stop_after:
                raise _Captured

        return hook

    handles = [m.register_forward_pre_hook(make(n)) for n, m in modules.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def forward_until(block: nn.Module, batch: BlockBatch) -> None:
    """Run ``block`` on one micro-batch, tolerating a hook that stops it early."""
    with contextlib.suppress(_Captured):
        block(batch.hidden, **batch.kwargs)


BlockFn = Callable[[int, nn.Module, list[BlockBatch]], "list[BlockBatch] | None"]
"""``process(index, block, inputs)``: modifies the block; may return the next block's inputs."""


@torch.no_grad()
def run_blockwise(model: nn.Module, samples: Tensor, process: BlockFn, *, batch_size: int = 8,
                  progress: ProgressFn | None = None) -> None:
    """Call ``process(index, block, inputs)`` on each decoder block in order; it modifies the block.

    The next block's inputs are what ``process`` returns (a method that already ran the block, such
    as AWQ on the unmodified block, saves a pass), else the modified block's outputs, so later blocks
    see and compensate the errors of earlier ones.
    """
    blocks = decoder_blocks(model)
    batches = capture_block_inputs(model, samples, batch_size)
    for i, block in enumerate(blocks):
        nxt = process(i, block, batches)
        batches = nxt if nxt is not None else run_block(block, batches)
        if progress is not None:
            progress("quantize", i + 1, len(blocks))
