"""Mixed precision under a budget: the knapsack, the recipe file, the prior, and the GGUF route end to end."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from quantmatch.planner.mixed import MixedOption, hull, solve
from quantmatch.sdk.recipe import Recipe, RecipeError, RecipeExistsError, load_recipe, save_recipe


def _brute(options: dict[str, list[MixedOption]], budget: int) -> float:
    best = float("inf")
    units = sorted(options)
    for combo in itertools.product(*(options[u] for u in units)):
        if sum(o.nbytes for o in combo) <= budget:
            best = min(best, sum(o.kld for o in combo))
    return best


# A hand-made table: three units, three formats each. "a" is very sensitive, "c" barely.
TABLE = {
    "a": [MixedOption("q8", 80, 0.001), MixedOption("q6", 60, 0.010), MixedOption("q4", 40, 0.100)],
    "b": [MixedOption("q8", 80, 0.002), MixedOption("q6", 60, 0.008), MixedOption("q4", 40, 0.030)],
    "c": [MixedOption("q8", 80, 0.0001), MixedOption("q6", 60, 0.0005), MixedOption("q4", 40, 0.0020)],
}


def test_knapsack_finds_the_hand_computed_optimum() -> None:
    # budget 160: all q4 (120 bytes, KL 0.132) leaves 40 bytes. Best use: a q4->q8 (+40, saves 0.099) ->
    # a=q8, b=q4, c=q4: 160 bytes, KL 0.001 + 0.030 + 0.002 = 0.033. Alternatives: a,b q6 (160, 0.020)
    # is better still: 0.010 + 0.008 + 0.002 = 0.020. Enumerated by hand: the optimum is a=q6, b=q6, c=q4.
    sol = solve(TABLE, 160)
    assert sol is not None
    assert {u: o.scheme for u, o in sol.choice.items()} == {"a": "q6", "b": "q6", "c": "q4"}
    assert sol.weight_bytes == 160
    assert sol.kld == pytest.approx(0.020)
    assert sol.kld == pytest.approx(_brute(TABLE, 160))


@pytest.mark.parametrize("budget", [120, 140, 150, 170, 180, 200, 220, 240, 260])
def test_knapsack_matches_brute_force_on_the_table(budget: int) -> None:
    sol = solve(TABLE, budget)
    assert sol is not None and sol.weight_bytes <= budget
    assert sol.kld == pytest.approx(_brute(TABLE, budget))


def test_knapsack_infeasible_and_deterministic() -> None:
    assert solve(TABLE, 119) is None
    assert solve(TABLE, 200) == solve(dict(reversed(list(TABLE.items()))), 200)


def test_hull_drops_dominated_and_non_convex_points() -> None:
    opts = [MixedOption("x", 10, 1.0), MixedOption("dominated", 20, 1.5), MixedOption("above", 20, 0.9),
            MixedOption("y", 30, 0.2), MixedOption("z", 40, 0.1)]
    # "above" lies above the segment x-y (at 20 bytes the segment is at 0.6): not on the lower hull
    assert [o.scheme for o in hull(opts)] == ["x", "y", "z"]


def _recipe(**kw: object) -> Recipe:
    base = dict(model="smollm2-135m", method="gguf", backend="llama.cpp", device="local-cpu",
                base_scheme="gguf-q4_k_m", assignments={"blk.0.ffn_down.weight": "gguf-q6_k"},
                predicted_weight_bytes=123, predicted_kld=0.01, budget_bytes=1000, context=512,
                sensitivity={"tokens": 256, "text": "tiny-shakespeare", "cache_key": "k"}, created_by="quantmatch t")
    base.update(kw)
    return Recipe(**base)  # type: ignore[arg-type]


def test_recipe_round_trip_and_refusals(tmp_path: Path) -> None:
    r = _recipe()
    path = save_recipe(r, tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["format"] == "quantmatch-recipe" and data["version"] == 1
    assert data["predicted"] == {"weight_bytes": 123, "kld": 0.01, "basis": "measured sensitivity, additive"}
    assert load_recipe(path) == r
    with pytest.raises(RecipeExistsError, match="--force"):
        save_recipe(r, path)
    save_recipe(_recipe(predicted_kld=0.5), path, force=True)
    assert load_recipe(path).predicted_kld == 0.5
    data["surprise"] = 1
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(RecipeError, match=r"unknown key.*surprise"):
        load_recipe(tmp_path / "bad.json")
    del data["surprise"]
    data["version"] = 2
    (tmp_path / "v2.json").write_text(json.dumps(data))
    with pytest.raises(RecipeError, match="version"):
        load_recipe(tmp_path / "v2.json")
    with pytest.raises(RecipeError, match="cannot read"):
        load_recipe(tmp_path / "missing.json")


def test_prior_recipe_for_a_builtin_shape(tmp_path: Path) -> None:
    """No weights: the seeds' prior. Llama-3.1-8B: 32 layers x 4 attention projections and the untied
    embedding and head at Q8_0 (34 bytes per 32 values), 32 x 3 MLP projections at Q4_K (144 per 256)."""
    from quantmatch.planner import plan
    from quantmatch.planner.mixed import plan_mixed

    p = plan("llama-3.1-8b", "local", memory_budget="8GB", context=4096)
    mp = plan_mixed(p)
    assert mp.basis == "prior" and mp.recipe.basis == "prior"
    assert mp.solution.counts() == {"gguf-q8_0": 32 * 4 + 2, "gguf-q4_k": 32 * 3}
    h, inter, kv, vocab = 4096, 14336, 1024, 128256
    q8 = (32 * (2 * h * h + 2 * h * kv) + 2 * vocab * h) * 34 / 32
    q4 = 32 * 3 * h * inter * 144 / 256
    assert mp.recipe.predicted_weight_bytes == pytest.approx(q8 + q4, rel=1e-6)
    # the KV cache at 4096 tokens: 2 x 32 layers x 8 KV heads x 128 x 4096 x 2 bytes (fp16)
    assert mp.kv_bytes == pytest.approx(2 * 32 * 8 * 128 * 4096 * 2, rel=0.01)
    assert mp.solution.budget_bytes == 8 * 10**9 - mp.kv_bytes - mp.activation_bytes - mp.runtime_bytes


def test_cli_plan_mixed_prior_writes_recipe_and_refuses_overwrite(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from quantmatch.cli.main import main

    out = tmp_path / "r.json"
    argv = ["plan", "llama-3.1-8b", "--device", "local", "--memory-budget", "8GB", "--mixed", "--recipe-out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "prior" in text and "130 x gguf-q8_0" in text
    assert load_recipe(out).method == "gguf"
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["plan", "llama-3.1-8b", "--recipe-out", str(out)]) == 2


# ---- the GGUF route on a tiny random model (fast) and on the bundled model (slow) -------------------------

def test_tiny_model_end_to_end(tmp_path: Path) -> None:
    """Sensitivity of every tensor at Q8_0 and Q4_0 on a tiny random Llama (hidden 256), the knapsack, the mixed
    file: its size equals the prediction to the byte and every tensor has the type the recipe gave it."""
    pytest.importorskip("torch")
    gguf = pytest.importorskip("gguf")
    pytest.importorskip("llama_cpp")
    from test_gguf import _build

    from quantmatch.planner.mixed import MixedOption as Opt
    from quantmatch.plugins.methods.gguf import GGUFQuantizer
    from quantmatch.sdk.mixed import quantize_recipe
    from quantmatch.sdk.models import resolve_model
    from quantmatch.sdk.sensitivity import measure_sensitivity

    model_dir = _build(tmp_path / "tiny")
    src = resolve_model(str(model_dir))
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"the word {i} and the rest." for i in range(400)))
    table = measure_sensitivity(src, GGUFQuantizer(), ["gguf-q8_0", "gguf-q4_0"], tokens=64, text=str(text),
                                threads=1, cache=False)
    units = table.units()
    assert len(units) == 1 + 2 * 7  # token_embd (tied head) and 7 projections per layer
    # what llama.cpp stored, read back: Q4_0 files keep the (tied) output tensor at Q6_K
    assert {(e.unit, e.scheme) for e in table.entries if e.unit == "token_embd.weight"} == {
        ("token_embd.weight", "gguf-q8_0"), ("token_embd.weight", "gguf-q6_k")}
    assert table.layouts["gguf-q4_0"]["token_embd.weight"] == "gguf-q6_k"
    for e in table.entries:  # the 4-bit variant costs more KL than the 8-bit one, for every tensor
        if e.scheme == "gguf-q4_0":
            q8 = next(x for x in table.entries if x.unit == e.unit and x.scheme == "gguf-q8_0")
            assert e.kld > q8.kld and e.nbytes < q8.nbytes
    assert len(table.entries) == 2 * len(units)
    options: dict[str, list[Opt]] = {}
    for e in table.entries:
        options.setdefault(e.unit, []).append(Opt(e.scheme, e.nbytes, e.kld))
    lo = sum(min(o.nbytes for o in v) for v in options.values())
    hi = sum(max(o.nbytes for o in v) for v in options.values())
    sol = solve(options, (lo + hi) // 2)
    assert sol is not None and lo < sol.weight_bytes <= (lo + hi) // 2
    rec = _recipe(model=str(model_dir), assignments={u: o.scheme for u, o in sol.choice.items()},
                  base_scheme="gguf-q4_0", predicted_weight_bytes=table.other_bytes + sol.weight_bytes,
                  predicted_kld=sol.kld)
    res = quantize_recipe(rec, tmp_path / "mixed")
    assert res.measured_bytes == res.predicted_bytes
    reader = gguf.GGUFReader(tmp_path / "mixed" / "model.gguf")
    stored = {t.name: f"gguf-{t.tensor_type.name.lower()}" for t in reader.tensors}
    assert all(stored[u] == s for u, s in rec.assignments.items())


@pytest.mark.slow
def test_bundled_model_recipe_size_exact_and_kl_near_prediction(tmp_path: Path) -> None:
    """SmolLM2-135M: sensitivity at Q8_0 and Q4_0 (every tensor, 128 tokens of the calibration text), a budget
    halfway, the mixed file: size equal to the prediction, and the KL measured by llama.cpp on the held-out
    text within a factor 3 of the predicted sum."""
    pytest.importorskip("llama_cpp")
    from quantmatch.plugins.methods.gguf import GGUFQuantizer
    from quantmatch.sdk.evaluate import evaluate
    from quantmatch.sdk.mixed import quantize_recipe
    from quantmatch.sdk.models import resolve_model
    from quantmatch.sdk.sensitivity import measure_sensitivity

    src = resolve_model("smollm2-135m")
    table = measure_sensitivity(src, GGUFQuantizer(), ["gguf-q8_0", "gguf-q4_0"], tokens=128)
    options: dict[str, list[MixedOption]] = {}
    for e in table.entries:
        options.setdefault(e.unit, []).append(MixedOption(e.scheme, e.nbytes, e.kld))
    budget = (table.files["gguf-q8_0"] + table.files["gguf-q4_0"]) // 2 - table.other_bytes
    sol = solve(options, budget)
    assert sol is not None
    rec = _recipe(assignments={u: o.scheme for u, o in sol.choice.items()}, base_scheme="gguf-q4_0",
                  predicted_weight_bytes=table.other_bytes + sol.weight_bytes, predicted_kld=sol.kld)
    res = quantize_recipe(rec, tmp_path / "mixed")
    assert res.measured_bytes == res.predicted_bytes
    ev = evaluate(tmp_path / "mixed", tokens=1024, reference="smollm2-135m")
    assert ev.fidelity is not None
    assert sol.kld / 3 < ev.fidelity.kld_mean < sol.kld * 3
