"""llm-compressor on the same model, calibration samples and scheme as quantmatch (the anchor run).

Runs inside llm-compressor's own virtual environment (it pins an older transformers; see
``benchmarks/llmcompressor_venv.sh``), so it imports nothing from quantmatch. It reads the fp32
model directory and the exact calibration token ids quantmatch used (``--samples``, a safetensors file
with ``input_ids [n, seq_len]``), runs ``oneshot`` with the recipe named by ``--recipe``, writes the
compressed-tensors checkpoint to ``--out`` and prints one JSON line: wall and CPU seconds of
``oneshot`` alone, peak RSS of the process, versions, or the error when the recipe cannot run here.

    /tmp/llmc/bin/python benchmarks/llmcompressor_anchor.py --model DIR --samples samples.safetensors \\
        --recipe gptq-w4g64 --out /tmp/anchor-gptq --threads 1
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import traceback
from importlib.metadata import version
from typing import Any

RECIPES = ("gptq-w4g64", "gptq-w3g64", "sq-w8a8-static", "sq-w8a8-dynamic", "awq-w4g64")


def _w8a8(static: bool) -> dict[str, Any]:
    act = ({"num_bits": 8, "type": "int", "symmetric": True, "strategy": "tensor", "dynamic": False} if static
           else {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True})
    return {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "int", "symmetric": True,
                                                           "strategy": "channel"}, "input_activations": act}}


def _w4(bits: int, symmetric: bool) -> dict[str, Any]:
    return {"group_0": {"targets": ["Linear"], "weights": {"num_bits": bits, "type": "int", "symmetric": symmetric,
                                                           "strategy": "group", "group_size": 64}}}


def recipe(name: str, alpha: float) -> list[Any]:
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    if name.startswith("gptq"):
        return [GPTQModifier(config_groups=_w4(int(name[6]), True), ignore=["lm_head"])]
    if name.startswith("sq"):
        from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

        return [SmoothQuantModifier(smoothing_strength=alpha),
                QuantizationModifier(config_groups=_w8a8(name.endswith("static")), ignore=["lm_head"])]
    from llmcompressor.modifiers.transform.awq import AWQModifier

    return [AWQModifier(), QuantizationModifier(config_groups=_w4(4, False), ignore=["lm_head"])]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--samples", required=True, help="safetensors file with input_ids [n, seq_len]")
    ap.add_argument("--recipe", required=True, choices=RECIPES)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--alpha", type=float, default=0.5, help="SmoothQuant strength (default 0.5)")
    args = ap.parse_args()

    import torch
    from datasets import Dataset
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    ids = load_file(args.samples)["input_ids"]
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    info: dict[str, Any] = {"recipe": args.recipe, "calibration": f"{ids.shape[0]}x{ids.shape[1]}",
                            "threads": args.threads, "llmcompressor": version("llmcompressor"),
                            "transformers": version("transformers"),
                            "compressed-tensors": version("compressed-tensors")}
    try:
        from llmcompressor import oneshot

        wall, cpu = time.perf_counter(), time.process_time()
        oneshot(model=model, dataset=ds, recipe=recipe(args.recipe, args.alpha), num_calibration_samples=ids.shape[0],
                max_seq_length=ids.shape[1], shuffle_calibration_samples=False)
        info.update(wall_s=round(time.perf_counter() - wall, 1), cpu_s=round(time.process_time() - cpu, 1))
        model.save_pretrained(args.out, save_compressed=True)
        tokenizer.save_pretrained(args.out)
    except Exception as e:  # record why llm-compressor cannot run this recipe on this machine
        info["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        info["traceback"] = traceback.format_exc().splitlines()[-6:]
    info["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(info))
    return 1 if "error" in info else 0


if __name__ == "__main__":
    sys.exit(main())
