"""Atomic output directories and the quantmatch.json manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quantmatch.sdk.artifact import (
    MANIFEST_NAME,
    ArtifactError,
    Manifest,
    OutputExistsError,
    atomic_output,
    path_size,
    read_manifest,
    write_manifest,
)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_atomic_output_renames_complete_directory(tmp_path: Path) -> None:
    target = tmp_path / "art"
    with atomic_output(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        assert not target.exists()  # nothing under the target name while writing
        (tmp / "weights.bin").write_bytes(b"x" * 10)
    assert (target / "weights.bin").read_bytes() == b"x" * 10
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("exc", [RuntimeError("crash"), KeyboardInterrupt()])
def test_failure_leaves_nothing(tmp_path: Path, exc: BaseException) -> None:
    target = tmp_path / "art"
    with pytest.raises(type(exc)), atomic_output(target) as tmp:
        (tmp / "half.bin").write_bytes(b"partial")
        raise exc
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_refused_without_force(tmp_path: Path) -> None:
    target = tmp_path / "art"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(OutputExistsError, match="--force"), atomic_output(target):
        pytest.fail("the block must not run")  # pragma: no cover
    assert (target / "keep.txt").read_text() == "old"


def test_force_replaces_only_after_success(tmp_path: Path) -> None:
    target = tmp_path / "art"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("crash")
    assert (target / "old.txt").read_text() == "old"  # a failed forced run keeps the old artifact
    with atomic_output(target, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert leftovers(tmp_path) == []


def test_stale_temporary_of_a_killed_run_is_removed(tmp_path: Path) -> None:
    target = tmp_path / "art"
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(proc.stdout)
    stale = tmp_path / f".art.tmp-{dead_pid}-abc"
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"x")
    live = tmp_path / f".art.tmp-{os.getpid()}-live"  # a concurrent run of a live process is kept
    live.mkdir()
    with atomic_output(target) as tmp:
        (tmp / "f").write_text("1")
    assert not stale.exists() and live.exists()


def test_manifest_round_trip_records_files_and_sizes(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "tok.json").write_text("{}")
    m = write_manifest(tmp_path, Manifest(method="hqq", scheme="w4a16-g64-asym", artifact_format="hqq",
                                         source_model="smollm2-135m", versions={"torch": "2.13.0"}))
    assert m.files == {"model.safetensors": 1000, "sub/tok.json": 2}
    assert m.size_bytes == 1002
    on_disk = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert on_disk["method"] == "hqq" and on_disk["format"] == "quantmatch-artifact/1"
    back = read_manifest(tmp_path)
    assert back == m
    assert path_size(tmp_path) == 1002 + (tmp_path / MANIFEST_NAME).stat().st_size


def test_missing_or_corrupt_manifest_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not a quantmatch artifact"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="--force"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"method": "x"}))
    with pytest.raises(ArtifactError, match="not a quantmatch-artifact/1 manifest"):
        read_manifest(tmp_path)
