"""A streamed quantization job's directory: what it is for, how far it got, and refusing a stale one.

A streamed job (:mod:`quantmatch.plugins.methods.algorithms.streaming`) keeps its progress in a job
directory beside the output, ``.{out}.quantmatch-job``: ``job.json`` (the fingerprint of the request and
the number of finished blocks), one safetensors shard per finished block, and the calibration
activations that enter the first unfinished block. The same command run again finds it and continues;
a job directory made for another model, method, scheme, options, calibration or quantmatch version is
refused with the fields that differ, never mixed into a new artifact. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantmatch.sdk.artifact import job_dir_for
from quantmatch.sdk.errors import InputError

__all__ = ["JOB_FILE", "RESUME_MODES", "JobState", "StaleJobError", "checkpoint_fingerprint", "job_dir_for",
           "open_job"]

JOB_FILE = "job.json"
JOB_VERSION = 1
RESUME_MODES = ("auto", "resume", "restart")
"""``auto``: continue a matching job directory, else start; ``resume``: a job directory must exist;
``restart``: discard any job directory and start from the first block."""


class StaleJobError(InputError):
    """A job directory that belongs to another request (or none where ``--resume`` asked for one)."""


def _sha256(path: Path, limit: int | None = None) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        h.update(f.read() if limit is None else f.read(limit))
    return h.hexdigest()


def _safetensors_header(path: Path) -> str:
    """The hash of a safetensors file's header (names, dtypes, shapes, offsets): cheap, and it changes
    with any re-save of the checkpoint; the size is compared too."""
    with path.open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return hashlib.sha256(f.read(min(n, 100_000_000))).hexdigest()


def checkpoint_fingerprint(directory: str | Path) -> dict[str, Any]:
    """What identifies a source checkpoint: its ``config.json`` and each shard's name, size and header."""
    d = Path(directory)
    shards = sorted(p for p in d.glob("*.safetensors"))
    return {"config": _sha256(d / "config.json") if (d / "config.json").is_file() else None,
            "shards": [[p.name, p.stat().st_size, _safetensors_header(p)] for p in shards]}


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


_LABELS = {"model": "model checkpoint", "method": "method", "scheme": "scheme", "options": "method options",
           "rules": "layer rules", "calibration": "calibration", "seed": "seed", "quantmatch": "quantmatch version",
           "dtype": "storage dtype", "blocks": "number of blocks", "layout": "job layout version"}


@dataclass
class JobState:
    """``job.json``: the request's fingerprint, the block count, the finished blocks and what each recorded."""

    directory: Path
    fingerprint: dict[str, Any]
    blocks: int
    done: int = 0
    block_details: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None

    @property
    def path(self) -> Path:
        return self.directory / JOB_FILE

    def save(self) -> None:
        _write_json(self.path, {"layout": JOB_VERSION, "fingerprint": self.fingerprint, "blocks": self.blocks,
                                "done": self.done, "block_details": self.block_details})

    def finish_block(self, index: int, details: Mapping[str, Any]) -> None:
        """Record block ``index`` as finished (its shard and the next block's inputs are already on disk)."""
        if index != self.done:
            raise RuntimeError(f"block {index} finished out of order (next expected: {self.done})")
        self.block_details.append(dict(details))
        self.done = index + 1
        self.save()

    def discard(self) -> None:
        _unlock(self.directory)
        shutil.rmtree(self.directory, ignore_errors=True)


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            label = _LABELS.get(key, key)
            a, b = old.get(key), new.get(key)
            if isinstance(a, (str, int, float)) and isinstance(b, (str, int, float)):
                out.append(f"{label}: {a} there, {b} now")
            else:
                out.append(f"{label} differs")
    return out


_LOCKS: dict[Path, int] = {}


def _lock(directory: Path) -> None:
    """Hold an exclusive lock on the job directory for this process's life (the system drops it when the
    process ends, ``kill -9`` included); another live process holding it means a second run of the same job."""
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    key = directory.resolve()
    if key in _LOCKS:
        return
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StaleJobError(f"another quantize is writing this output right now ({directory} is locked); wait "
                            "for it to finish or stop it first", fix="wait, or stop the other run") from None
    _LOCKS[key] = fd


def _unlock(directory: Path) -> None:
    fd = _LOCKS.pop(directory.resolve(), None)
    if fd is not None:
        os.close(fd)


def open_job(directory: Path, fingerprint: dict[str, Any], blocks: int, resume: str = "auto") -> JobState:
    """The job state to continue or a fresh one; refuses a job directory made for another request, or one
    that another live process is writing.

    ``resume``: see :data:`RESUME_MODES`. A fresh job creates ``directory`` (with the user's umask). The
    directory stays locked by this process until :meth:`JobState.discard` or the process ends.
    """
    try:
        return _open_job(directory, fingerprint, blocks, resume)
    except StaleJobError:
        if directory.exists():
            _unlock(directory)
        raise


def _open_job(directory: Path, fingerprint: dict[str, Any], blocks: int, resume: str) -> JobState:
    if resume not in RESUME_MODES:
        raise StaleJobError(f"resume must be one of {', '.join(RESUME_MODES)}, not {resume!r}",
                            choices=RESUME_MODES)
    path = directory / JOB_FILE
    if directory.exists():
        _lock(directory)
    if resume == "restart" and directory.exists():
        _unlock(directory)
        shutil.rmtree(directory)
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            old = {**data["fingerprint"], "blocks": data["blocks"], "layout": data.get("layout")}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StaleJobError(f"{directory} holds an unreadable job file ({e}); run again with --restart to "
                                "discard it", fix="--restart") from e
        diff = _differences(old, {**fingerprint, "blocks": blocks, "layout": JOB_VERSION})
        if diff:
            raise StaleJobError(
                f"{directory} holds an interrupted job for another request ({'; '.join(diff)}): it is not mixed "
                "into this one. Run the original command again to finish it, or pass --restart to discard it",
                fix="--restart")
        state = JobState(directory, fingerprint, blocks, int(data["done"]), list(data.get("block_details") or []))
        state.resumed_from = state.done
        return state
    if resume == "resume":
        raise StaleJobError(f"--resume: there is no interrupted job to continue ({directory} does not exist); "
                            "run without --resume to start one", fix="drop --resume")
    if directory.exists():  # a directory without job.json: a job killed before its first save
        _unlock(directory)
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    _lock(directory)
    state = JobState(directory, fingerprint, blocks)
    state.save()
    return state
