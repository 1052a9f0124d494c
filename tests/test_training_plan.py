"""Fine-tuning memory plans (issue 19, item 4): a hand-computed breakdown, published figures, CLI and JSON.

Published peak-memory figures used as checks (none of them set a constant of the model: every term is
computed from shapes and byte counts, so all are out-of-sample). Configurations as the cited configs
state them; units as published (GB = 1e9 bytes, GiB = 2^30).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from quantmatch.cli import main
from quantmatch.planner.training import (
    BASE_FORMATS,
    CUDA_CONTEXT_GIB,
    lora_params,
    plan_training,
    training_memory,
)
from quantmatch.planner.types import PlanInputError
from quantmatch.sdk.model_info import ModelInfo

GB, GIB = 1e9, float(2**30)

LLAMA2_7B_CONFIG = {
    # meta-llama/Llama-2-7b-hf config.json; the same shapes as torchtune's llama2_7b builder
    # (pytorch/torchtune torchtune/models/llama2/_model_builders.py @0217d44c: vocab 32_000, 32 layers,
    # 32 heads and KV heads, embed_dim 4096; intermediate 11008 from scale_hidden_dim_for_mlp(4096)).
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
    "tie_word_embeddings": False, "max_position_embeddings": 4096,
}
LLAMA2_7B = ModelInfo.from_config(LLAMA2_7B_CONFIG, name="llama-2-7b")


@dataclass(frozen=True)
class Published:
    """One published peak (torch allocator view: CUDA context not included)."""

    label: str
    model: Any
    kwargs: dict[str, Any]
    bytes: float
    source: str


PUBLISHED = [
    Published("torchtune Llama2-7B QLoRA, 1x RTX 4090", LLAMA2_7B,
              dict(workload="qlora", batch=4, seq=2048, lora_rank=8, lora_targets="all", lora_dropout=0.05,
                   optimizer="adamw", precision="bf16"),
              12.3 * GB, "pytorch/torchtune README.md @0217d44c (PR #955), row 'QLoRA ** Llama2-7B, Batch Size = 4, "
                         "Seq Length = 2048': 12.3 GB; config llama2/7B_qlora_single_device.yaml @0217d44c (rank 8, "
                         "q/k/v/output_proj + MLP, AdamW, bf16, activation checkpointing); ** = torch compile"),
    Published("torchtune Llama2-7B LoRA, 1x RTX 4090", LLAMA2_7B,
              dict(workload="lora", batch=4, seq=2048, lora_rank=8, lora_targets="qv", lora_dropout=0.05,
                   optimizer="adamw", precision="bf16"),
              21.3 * GB, "pytorch/torchtune README.md @0217d44c, row 'LoRA Llama2-7B, Batch Size = 4, Seq Length = "
                         "2048': 21.3 GB; config llama2/7B_lora_single_device.yaml (rank 8, q_proj/v_proj)"),
    Published("torchtune Llama2-7B full, 1x RTX 4090 (reproduced)", LLAMA2_7B,
              dict(workload="full", batch=4, seq=2048, optimizer="paged_adamw", precision="bf16",
                   optimizer_in_backward=True),
              20.2 * GB, "pytorch/torchtune PR #961 (rohan-varma, 2024-05-10): the README's 24.1 GB 'can't reproduce', "
                         "20.2 GB peak allocated with every input at seq_len 2048, batch_size=4, "
                         "llama2/7B_full_low_memory.yaml (bnb PagedAdamW, optimizer_in_bwd, checkpointing)"),
    Published("torchtune Llama3.1-8B QLoRA, 1x 4090", "llama-3.1-8b",
              dict(workload="qlora", batch=2, seq=2048, lora_rank=8, lora_targets="all", optimizer="adamw",
                   precision="bf16", chunked_loss=True),
              7.4 * GIB, "pytorch/torchtune README.md @30b8519e (PR #1664), 'Memory and training speed', Llama 3.1 "
                         "8B QLoRA 1x 4090: 7.4 GiB (batch 2, packed to 2048, torch compile); config "
                         "llama3_1/8B_qlora_single_device.yaml (rank 8, all linears, CEWithChunkedOutputLoss)"),
    Published("torchtune Llama3.1-8B LoRA, 1x 4090", "llama-3.1-8b",
              dict(workload="lora", batch=2, seq=2048, lora_rank=8, lora_targets="qv", optimizer="adamw",
                   precision="bf16", chunked_loss=True),
              16.2 * GIB, "pytorch/torchtune README.md @30b8519e, Llama 3.1 8B LoRA 1x 4090: 16.2 GiB; config "
                          "llama3_1/8B_lora_single_device.yaml (rank 8, q_proj/v_proj)"),
    Published("torchtune Llama3.1-8B full, 1x 4090", "llama-3.1-8b",
              dict(workload="full", batch=2, seq=2048, optimizer="paged_adamw_8bit", precision="bf16",
                   chunked_loss=True, optimizer_in_backward=True),
              18.9 * GIB, "pytorch/torchtune README.md @30b8519e, Llama 3.1 8B full finetune 1x 4090: 18.9 GiB; "
                          "config llama3_1/8B_full_single_device.yaml (PagedAdamW8bit, optimizer_in_bwd)"),
]

KNOWN_MISS = {"torchtune Llama2-7B QLoRA, 1x RTX 4090": 0.20}
"""Figures the model misses by more than 15%, with the bound it is held to (see docs/planner.md, "The miss"):
no QLoRA-specific term at the peak was found in the sources (torchtune @0217d44c, torchao v0.1 NF4); both
Llama2-7B adapter rows of that 2024-05 table sit 1.5-1.9 GB above the model, and its full fine-tune row
(24.1 GB) was reproduced at 20.2 GB allocated in PR #961: a table-level offset, plus torch.compile."""


def _predicted_bytes(p: Published) -> float:
    parts, _trainable, _total = training_memory(p.model, **p.kwargs)
    return sum(x.gib for x in parts if x.name != "runtime" and not x.paged) * GIB


@pytest.mark.parametrize("pub", PUBLISHED, ids=[p.label for p in PUBLISHED])
def test_published_training_peaks(pub: Published) -> None:
    err = _predicted_bytes(pub) / pub.bytes - 1
    bound = KNOWN_MISS.get(pub.label, 0.15)
    assert abs(err) <= bound, f"{pub.label}: predicted {_predicted_bytes(pub) / GB:.2f} GB vs {pub.bytes / GB:.2f} " \
                              f"GB ({err:+.1%}); {pub.source}"


def test_most_published_qlora_figures_are_within_15_percent() -> None:
    errs = {p.label: _predicted_bytes(p) / p.bytes - 1 for p in PUBLISHED}
    assert abs(errs["torchtune Llama3.1-8B QLoRA, 1x 4090"]) <= 0.15
    assert sum(abs(e) <= 0.15 for e in errs.values()) >= 5


def test_the_llama2_qlora_miss_is_shared_by_the_lora_row_of_the_same_table() -> None:
    """The documented miss is a table-level offset: the 2024-05 LoRA row (no compile, no NF4) sits above the
    model by nearly as much as the QLoRA row; if a change closed one gap and not the other, revisit the
    explanation in docs/planner.md."""
    by = {p.label: p for p in PUBLISHED}
    q, lo = by["torchtune Llama2-7B QLoRA, 1x RTX 4090"], by["torchtune Llama2-7B LoRA, 1x RTX 4090"]
    gap_q, gap_l = q.bytes - _predicted_bytes(q), lo.bytes - _predicted_bytes(lo)
    assert 1.0 * GB < gap_l < gap_q < gap_l + 0.6 * GB, (gap_q / GB, gap_l / GB)


# ---- a small shape, every term by hand ---------------------------------------------------------------
TINY = ModelInfo.from_config({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                              "vocab_size": 1000, "tie_word_embeddings": False}, name="tiny")


def test_tiny_qlora_breakdown_by_hand() -> None:
    h, i, L, V, hd, kvh = 64, 128, 2, 1000, 16, 2
    q, kv = 4 * hd, kvh * hd  # 64, 32
    per_layer_linear = h * q + 2 * h * kv + q * h + 3 * h * i  # q, k, v, o, gate, up, down
    linear = L * per_layer_linear
    non_linear = 2 * V * h + (2 * L + 1) * h  # embeddings, lm_head, norms
    r = 4
    per_layer_lora = r * ((h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h))
    assert lora_params(TINY, r, "all") == L * per_layer_lora
    b, s = 2, 8
    tokens = b * s
    parts, trainable, total = training_memory(TINY, "qlora", batch=b, seq=s, lora_rank=r, optimizer="adamw",
                                              precision="bf16")
    got = {p.name: p.gib * GIB for p in parts}
    nf4_bits = 4 + 8 / 64 + 32 / (64 * 256)
    assert got["base weights (frozen)"] == pytest.approx(linear * nf4_bits / 8 + non_linear * 2)
    assert trainable == L * per_layer_lora and total == linear + non_linear
    assert got["adapter weights"] == pytest.approx(trainable * 2)
    assert got["gradients"] == pytest.approx(trainable * 2)
    assert got["optimizer states"] == pytest.approx(trainable * 2 * 2)  # AdamW m and v in bf16
    assert got["activations (checkpoints)"] == pytest.approx(L * h * 2 * tokens)
    # the loss working set (16 B per token per vocab entry) beats one layer's recompute here
    layer = (4 * h + 2 * q + 2 * kv + 4 * i + 7 * r) * 2 * tokens
    assert tokens * V * 16 > layer
    assert got["loss working set"] == pytest.approx(tokens * V * 16)
    assert got["runtime"] == 0.0  # training_memory alone adds no runtime


def test_tiny_without_checkpointing_and_mixed_full() -> None:
    h, i, L, q, kv, r = 64, 128, 2, 64, 32, 4
    tokens = 1 * 8
    parts, _t, _n = training_memory(TINY, "lora", batch=1, seq=8, lora_rank=r, lora_dropout=0.1,
                                    gradient_checkpointing=False)
    got = {p.name: p.gib * GIB for p in parts}
    lora_in = (h + h + h) + q + (h + h) + i  # inputs of q, k, v, o, gate, up, down
    layer = (4 * h + 2 * q + 2 * kv + 4 * i) * 2 + 7 * r * 2 + lora_in * 3
    assert got["activations"] == pytest.approx(L * layer * tokens)
    assert "activations (checkpoints)" not in got
    parts, trainable, total = training_memory(TINY, "full", batch=1, seq=8)  # mixed precision by default
    got = {p.name: p.gib * GIB for p in parts}
    assert trainable == total
    # ZeRO's 2 + 2 + 12 bytes per parameter: 16-bit weights and grads, fp32 master, fp32 Adam m and v
    assert got["weights"] + got["gradients"] + got["master weights (fp32)"] + got["optimizer states"] \
        == pytest.approx(16 * total)


def test_optimizers_and_base_formats() -> None:
    kw: dict[str, Any] = dict(batch=1, seq=8, lora_rank=4)
    p8 = {p.name: p for p in training_memory(TINY, "full", optimizer="paged_adamw_8bit", **{"batch": 1, "seq": 8})[0]}
    total = training_memory(TINY, "full", batch=1, seq=8)[2]
    assert p8["optimizer states"].paged and p8["optimizer states"].gib * GIB == pytest.approx(
        total * 2 * (1 + 4 / 2048))
    sgd = {p.name: p.gib for p in training_memory(TINY, "qlora", optimizer="sgd", **kw)[0]}
    assert sgd["optimizer states"] == 0.0
    int8 = {p.name: p.gib * GIB for p in training_memory(TINY, "qlora", base_format="int8", **kw)[0]}
    linear, rows = 2 * (64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128), 2 * (64 + 32 + 32 + 64 + 128 + 128 + 64)
    assert int8["base weights (frozen)"] == pytest.approx(linear + rows * 4 + (2 * 1000 * 64 + 5 * 64) * 2)
    assert BASE_FORMATS["nf4"].bits == pytest.approx(4.127, abs=1e-3)  # QLoRA paper: 0.127 bits of constants


# ---- plans on a 24 GB GPU ----------------------------------------------------------------------------
def test_qlora_plan_for_a_7b_model_on_a_24gb_gpu() -> None:
    p = plan_training("llama-3.1-8b", "rtx4090", "qlora", batch=2, seq=2048, lora_rank=8, chunked_loss=True)
    assert p.capacity_gib == 24.0 and p.fits and p.base_format == "nf4"
    assert p.total_gib == pytest.approx(p.tensors_gib + CUDA_CONTEXT_GIB)
    assert p.tensors_gib * GIB == pytest.approx(_predicted_bytes(PUBLISHED[3]))
    # the seeds' decision tree: full does not fit on 24 GB, LoRA in 16-bit does -> recommend LoRA
    by = {o.workload: o for o in p.options}
    assert by["full"].fits is False and by["lora"].fits is True and p.recommended == "lora"
    # a 10 GB budget leaves only QLoRA
    q = plan_training("llama-3.1-8b", "rtx4090", "qlora", batch=2, seq=2048, lora_rank=8, chunked_loss=True,
                      memory_budget="10GB")
    assert q.recommended == "qlora" and q.capacity_source == "--memory-budget"
    # 80 GB holds LoRA but not a mixed-precision full fine-tune of 8B (16 bytes/param = 120 GiB)
    a = plan_training("llama-3.1-8b", "a100-80gb", "lora", batch=2, seq=2048, lora_rank=8, chunked_loss=True)
    assert a.recommended == "lora"
    s = plan_training("smollm2-135m", "rtx4090", "full", batch=1, seq=512)
    assert s.fits and s.recommended == "full"


@pytest.mark.parametrize("kwargs, words", [
    (dict(workload="qlorax"), ["qlora, lora, full"]),
    (dict(workload="qlora", optimizer="adam9"), ["adamw", "paged_adamw_8bit"]),
    (dict(workload="qlora", base_format="bf16"), ["--workload lora", "nf4"]),
    (dict(workload="lora", base_format="nf5"), ["nf4", "int8"]),
    (dict(workload="qlora", lora_targets="mlp"), ["all", "attention", "qv"]),
    (dict(workload="qlora", lora_rank=0), ["--lora-rank"]),
    (dict(workload="qlora", batch=-1), ["--batch"]),
    (dict(workload="qlora", seq="x"), ["--seq-len"]),
    (dict(workload="qlora", precision="fp8"), ["bf16", "mixed"]),
    (dict(workload="qlora", lora_dropout=1.5), ["--lora-dropout"]),
])
def test_bad_input_names_the_choices(kwargs: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(PlanInputError) as e:
        plan_training("llama-3.1-8b", "rtx4090", **kwargs)
    assert all(w in str(e.value) for w in words), str(e.value)


# ---- CLI ---------------------------------------------------------------------------------------------
def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json_matches_the_api(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "llama-2-7b"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps(LLAMA2_7B_CONFIG), encoding="utf-8")
    code, out, _ = run(capsys, "plan", str(cfg), "--device", "rtx4090", "--workload", "lora", "--batch", "4",
                       "--seq-len", "2048", "--lora-rank", "8", "--lora-targets", "qv", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["schema"] == 1 and len(data["training"]) == 1
    t = data["training"][0]
    assert t["workload"] == "lora" and t["base_format"] == "bf16" and t["seq_len"] == 2048
    assert t["trainable_params"] == lora_params(LLAMA2_7B, 8, "qv") == 32 * 2 * 8 * (4096 + 4096)
    pub = PUBLISHED[1]
    assert t["tensors_gib"] == pytest.approx(_predicted_bytes(pub) / GIB, abs=2e-3)
    parts = {p["name"]: p["gib"] for p in t["parts"]}
    assert parts["base weights (frozen)"] == pytest.approx(6_738_415_616 * 2 / GIB, abs=1e-3)
    assert t["fits"] is True and t["recommended"] == "lora"
    assert [o["workload"] for o in t["options"]] == ["qlora", "lora", "full"]


def test_cli_table_and_several_devices(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "llama-3.1-8b", "--device", "rtx4090", "--device", "l4", "--workload",
                       "qlora", "--batch", "2", "--lora-rank", "8", "--chunked-loss")
    assert code == 0
    assert "base weights (frozen)" in out and "optimizer states" in out and "recommended" in out
    assert "RTX 4090" in out and "L4" in out


@pytest.mark.parametrize("argv, words", [
    (["--workload", "finetune"], ["inference, qlora, lora, full"]),
    (["--workload", "qlora", "--optimizer", "lion"], ["adamw_8bit"]),
    (["--workload", "qlora", "--kv", "fp8"], ["--kv"]),
    (["--workload", "qlora", "--batch", "1,8"], ["--batch"]),
    (["--workload", "lora", "--seq-len", "0"], ["--seq-len"]),
])
def test_cli_bad_values_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], words: list[str]) -> None:
    code, _out, err = run(capsys, "plan", "llama-3.1-8b", "--device", "rtx4090", *argv)
    assert code == 2
    assert all(w in err for w in words), err
    assert "Traceback" not in err


def test_plan_workload_imports_no_heavy_module() -> None:
    code = ("import sys, quantmatch.cli as c\n"
            "c.main(['plan', 'llama-3.1-8b', '--device', 'rtx4090', '--workload', 'qlora', '--json'])\n"
            "print('HEAVY=' + ','.join(m for m in ('torch', 'transformers', 'textual', 'ray') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.rstrip().endswith("HEAVY="), r.stdout[-500:] + r.stderr[-2000:]
