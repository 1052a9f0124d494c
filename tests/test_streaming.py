"""Streaming quantization (issue 15): a sharded checkpoint read block by block gives the tensors the
in-memory path gives; a job killed at block k resumes and writes the same artifact; a stale job is
refused; the job estimate refuses what cannot fit. Real models, real processes, real files."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from quantmatch.cli import main

torch = pytest.importorskip("torch")
pytest.importorskip("compressed_tensors")

from tiny_models import llama_config, make_tokenizer, save_tiny_model  # noqa: E402

LAYERS = 4


@pytest.fixture(scope="module")
def sharded_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 4-block Llama (untied head) saved in several safetensors shards, with its tokenizer."""
    from transformers import AutoModelForCausalLM

    d = tmp_path_factory.mktemp("sharded-llama")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(llama_config(layers=LAYERS), dtype=torch.float32)
    model.save_pretrained(str(d), max_shard_size="150KB")
    make_tokenizer().save_pretrained(str(d))
    assert len(list(d.glob("*.safetensors"))) >= 3 and (d / "model.safetensors.index.json").is_file()
    return d


def tensors(directory: Path) -> dict[str, Any]:
    from safetensors import safe_open

    out: dict[str, Any] = {}
    for f in sorted(directory.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():  # noqa: SIM118
                out[k] = st.get_tensor(k)
    return out


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = tensors(a), tensors(b)
    assert set(ta) == set(tb)
    for k, x in ta.items():
        y = tb[k]
        assert x.dtype == y.dtype and x.shape == y.shape, k
        if x.is_floating_point():
            torch.testing.assert_close(x, y, rtol=0, atol=1e-6, msg=k)
        else:
            assert torch.equal(x, y), k


def quantize(src: Path, method: str, scheme: str, out: Path, **kw: Any) -> Any:
    from quantmatch.sdk.pipeline import quantize as q

    return q(src, method, scheme, out, force=True, **kw)


@pytest.mark.parametrize(("method", "scheme"), [("rtn", "w4a16-g32"), ("gptq", "w4a16-g32"),
                                                ("awq", "w4a16-g32-asym"), ("smoothquant", "w8a8-int8-static")])
def test_streamed_equals_in_memory(sharded_llama: Path, tmp_path: Path, method: str, scheme: str) -> None:
    streamed = quantize(sharded_llama, method, scheme, tmp_path / "streamed")
    whole = quantize(sharded_llama, method, scheme, tmp_path / "whole", stream=False)
    assert streamed.manifest.details["streamed"]["blocks"] == LAYERS
    assert "streamed" not in whole.manifest.details
    # one shard per block and one per tensor outside them (embeddings, norm, head), with an index
    shards = sorted(p.name for p in (tmp_path / "streamed").glob("*.safetensors"))
    assert len(shards) == LAYERS + 3 and (tmp_path / "streamed" / "model.safetensors.index.json").is_file()
    assert_same_tensors(tmp_path / "streamed", tmp_path / "whole")
    cs = json.loads((tmp_path / "streamed" / "config.json").read_text())
    cw = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert cs["quantization_config"] == cw["quantization_config"]
    assert not list(tmp_path.glob(".*quantmatch-job"))  # the job directory goes once the artifact is complete
    # and transformers runs it
    from quantmatch.sdk.pipeline import load_artifact

    ids = torch.tensor([[5, 17, 42, 99, 7]])
    a, b = load_artifact(tmp_path / "streamed").model, load_artifact(tmp_path / "whole").model
    torch.testing.assert_close(a(ids).logits, b(ids).logits)


def test_tied_embeddings_and_a_quantized_head(tmp_path: Path) -> None:
    """A tied head is stored once, as the in-memory path does; a rule that quantizes an untied head (RTN
    rounds every layer) is honoured outside the blocks; a tied head that a rule quantizes shares its tensor
    with the embeddings: that request loads the model whole."""
    tied = save_tiny_model(tmp_path / "tied-src", llama_config(tie=True))
    untied = save_tiny_model(tmp_path / "untied-src", llama_config())
    for name, src, kw in (("tied", tied, {}), ("head", untied, {"rules": ["lm_head=int8"]}),
                          ("tied-head", tied, {"rules": ["lm_head=int8"]})):
        streamed = quantize(src, "rtn", "w4a16-g32", tmp_path / f"{name}-s", **kw)
        whole = quantize(src, "rtn", "w4a16-g32", tmp_path / f"{name}-w", stream=False, **kw)
        assert_same_tensors(tmp_path / f"{name}-s", tmp_path / f"{name}-w")
        assert streamed.manifest.details["quantized_layers"] == whole.manifest.details["quantized_layers"]
        assert ("streamed" in streamed.manifest.details) == (name != "tied-head")


def test_offload_dir_gives_the_same_artifact(sharded_llama: Path, tmp_path: Path) -> None:
    quantize(sharded_llama, "gptq", "w4a16-g32", tmp_path / "mem")
    off = tmp_path / "offload"
    res = quantize(sharded_llama, "gptq", "w4a16-g32", tmp_path / "disk", offload_dir=off)
    assert res.manifest.details["streamed"]["offload_dir"] == str(off)
    assert_same_tensors(tmp_path / "mem", tmp_path / "disk")
    assert not list(off.rglob("*.pt"))  # the carried activations are removed with the job


KILLER = r"""
import os, signal, sys
from quantmatch.sdk.pipeline import quantize
src, out, method, scheme, k = sys.argv[1:6]
def progress(stage, done, total):
    if stage == "quantize" and done == int(k):
        os.kill(os.getpid(), signal.SIGKILL)
quantize(src, method, scheme, out, progress=progress)
"""


def run_killed(src: Path, out: Path, method: str, scheme: str, k: int) -> None:
    proc = subprocess.run([sys.executable, "-c", KILLER, str(src), str(out), method, scheme, str(k)],
                          capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not out.exists()  # nothing half-written where the artifact goes


CLI = "import sys; from quantmatch.cli import main; sys.exit(main(sys.argv[1:]))"


def test_killed_gptq_job_resumes_to_the_same_artifact(sharded_llama: Path, tmp_path: Path) -> None:
    # every run in a fresh process, as a user's would be (the same thread count each time: float sums
    # in another order would round differently)
    out = tmp_path / "resumed"
    run_killed(sharded_llama, out, "gptq", "w4a16-g32", 2)
    job = tmp_path / ".resumed.quantmatch-job"
    state = json.loads((job / "job.json").read_text())
    assert state["done"] == 2 and state["blocks"] == LAYERS
    # the same command again continues from block 2
    args = ["quantize", str(sharded_llama), "--method", "gptq", "--scheme", "w4a16-g32", "--json"]
    for target in (out, tmp_path / "uninterrupted"):
        proc = subprocess.run([sys.executable, "-c", CLI, *args, "--out", str(target)], capture_output=True,
                              text=True, check=False, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((out / "quantmatch.json").read_text())
    assert manifest["details"]["streamed"]["resumed_from"] == 2
    assert json.loads((tmp_path / "uninterrupted" / "quantmatch.json").read_text())["details"]["streamed"][
        "resumed_from"] is None
    assert not job.exists()
    assert_same_tensors(out, tmp_path / "uninterrupted")


def test_ctrl_c_in_the_cli_says_what_is_kept_and_the_rerun_says_it_resumed(
        sharded_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import quantmatch.plugins.methods.algorithms.gptq as gptq

    real = gptq.gptq_block
    calls: list[int] = []

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "art"
    cmd = ["quantize", str(sharded_llama), "--method", "gptq", "--scheme", "w4a16-g32", "--out", str(out)]
    monkeypatch.setattr(gptq, "gptq_block", interrupted)
    assert main(cmd) == 130
    err = capsys.readouterr().err
    assert "2 of 4 blocks are done" in err and "run the same command again" in err and "interrupted" in err
    assert main(cmd) == 0
    table = capsys.readouterr().out
    assert "block by block (4 blocks), resumed at block 3" in table


def test_stale_job_is_refused_and_restart_discards_it(sharded_llama: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "art"
    run_killed(sharded_llama, out, "gptq", "w4a16-g32", 1)
    base = ["quantize", str(sharded_llama), "--method", "gptq", "--out", str(out)]
    assert main([*base, "--scheme", "w4a16-g64"]) == 2
    err = capsys.readouterr().err
    assert "another request" in err and "scheme: w4a16-g32 there, w4a16-g64 now" in err and "--restart" in err
    assert main([*base, "--scheme", "w4a16-g32", "--option", "damp=0.05"]) == 2
    assert "method options differ" in capsys.readouterr().err
    assert not out.exists() and (tmp_path / ".art.quantmatch-job" / "job.json").is_file()
    assert main([*base, "--scheme", "w4a16-g64", "--restart", "--json"]) == 0
    manifest = json.loads((out / "quantmatch.json").read_text())
    assert manifest["scheme"] == "w4a16-g64" and manifest["details"]["streamed"]["resumed_from"] is None


HOLDER = r"""
import sys, time
from pathlib import Path
from quantmatch.plugins.methods._stream_job import open_job
open_job(Path(sys.argv[1]), {"model": "m"}, 4)
print("locked", flush=True)
time.sleep(60)
"""


def test_a_job_another_live_process_is_writing_is_refused(tmp_path: Path) -> None:
    from quantmatch.plugins.methods._stream_job import StaleJobError, open_job

    job = tmp_path / ".art.quantmatch-job"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(job)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(StaleJobError, match="another quantize is writing this output"):
            open_job(job, {"model": "m"}, 4)
    finally:
        holder.kill()
        holder.wait()
    # the lock dies with its process (kill -9 included): the job is continued
    assert open_job(job, {"model": "m"}, 4).done == 0


def test_resume_without_a_job_and_streaming_flags_on_a_whole_model_method(sharded_llama: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    base = ["quantize", str(sharded_llama), "--out", str(tmp_path / "x")]
    assert main([*base, "--method", "rtn", "--scheme", "w8a16", "--resume"]) == 2
    assert "no interrupted job to continue" in capsys.readouterr().err
    assert main([*base, "--method", "quanto", "--scheme", "w8a16", "--offload-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "does not stream" in err and "gptq" in err and "rtn" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "o").exists()


def test_dry_run_prints_the_job_estimate(sharded_llama: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "never"
    assert main(["quantize", str(sharded_llama), "--method", "gptq", "--scheme", "w4a16-g32", "--out", str(out),
                 "--dry-run", "--json"]) == 0
    job = json.loads(capsys.readouterr().out)["job"]
    assert job["feasible"] is True and 0.3 < job["ram_gib"] < 2 and job["disk_gib"] >= 0 and job["time_s"] >= 0
    assert any("streamed" in d for d in job["details"])
    assert not out.exists() and not list(tmp_path.iterdir())


def _big_config(tmp_path: Path) -> Path:
    """A 70B Llama's config.json alone: shapes to estimate from, no weights."""
    d = tmp_path / "llama-70b"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192,
        "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
        "vocab_size": 128256, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "tie_word_embeddings": False}))
    return d


def test_a_job_that_cannot_fit_is_refused_with_the_flag_that_helps(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from quantmatch.planner.job import _host_ram_gib, estimate_quantize_job

    host = _host_ram_gib()
    if host is None or host > 200:
        pytest.skip("this machine has room for a 70B model in fp32")
    src = _big_config(tmp_path)
    out = tmp_path / "q"
    # whole-model RTN of a 70B model needs hundreds of GiB; streamed it needs a few
    whole = estimate_quantize_job(src, "rtn", "w4a16-g128", streamed=False, check=False)
    streamed = estimate_quantize_job(src, "rtn", "w4a16-g128", streamed=True, check=False)
    assert whole.ram_gib > 280 and streamed.ram_gib < 16
    assert main(["quantize", str(src), "--method", "rtn", "--scheme", "w4a16-g128", "--out", str(out), "--no-stream",
                 "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "does not fit this machine" in err and "drop --no-stream" in err
    # a calibration set too large to carry in memory: the fix names --offload-dir and fewer samples
    assert main(["quantize", str(src), "--method", "gptq", "--scheme", "w4a16-g128", "--out", str(out),
                 "--samples", "512", "--seq-len", "4096", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "RAM" in err and "--offload-dir" in err and "--samples 256" in err
    assert not out.exists()
