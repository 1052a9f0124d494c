"""Quantized artifacts on disk: atomic output directories and the ``quantmatch.json`` manifest.

Every artifact quantmatch writes is a directory holding the method's files plus a small manifest,
``quantmatch.json``, that says what it is (method, scheme, source model, library versions, sizes),
so :func:`quantmatch.load_artifact` can dispatch without guessing.

Output is atomic: :func:`atomic_output` hands out a temporary directory beside the target and
renames it onto the target only when the block finishes; an exception or Ctrl-C removes it, so a
failed run never leaves a half-written artifact under the target name. The renamed directory and its
files get the permissions the user's umask gives (not the private 0700/0600 of a temporary directory),
so another user or a serving container can read an artifact as it reads any other file.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantmatch.sdk.errors import InputError

__all__ = [
    "MANIFEST_NAME",
    "ArtifactError",
    "Manifest",
    "OutputExistsError",
    "atomic_output",
    "atomic_write_json",
    "check_files",
    "check_output",
    "library_versions",
    "path_size",
    "pid_alive",
    "read_manifest",
    "remake_command",
    "write_manifest",
]

MANIFEST_NAME = "quantmatch.json"
MANIFEST_FORMAT = "quantmatch-artifact/1"
_TMP_MARK = ".tmp-"


class ArtifactError(InputError):
    """A path that is not a readable quantmatch artifact (missing or corrupt manifest)."""


class OutputExistsError(InputError, FileExistsError):
    """The output path exists and replacing it was not asked for."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} already exists; choose another output directory or pass --force "
                         "(force=True in Python) to replace it")
        self.path = path


def path_size(path: str | Path) -> int:
    """Bytes on disk of a file, or of every file under a directory (links not followed)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(target: Path) -> None:
    """Remove temporary directories left beside ``target`` by runs that were killed (SIGKILL)."""
    prefix = f".{target.name}{_TMP_MARK}"
    for p in target.parent.glob(prefix + "*"):
        pid_text = p.name[len(prefix):].split("-", 1)[0]
        if pid_text.isdigit() and not pid_alive(int(pid_text)):
            shutil.rmtree(p, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def check_output(target: str | Path, force: bool = False) -> Path:
    """Refuse an existing ``target`` unless ``force``; call it before any slow work."""
    t = Path(target)
    if (t.exists() or t.is_symlink()) and not force:
        raise OutputExistsError(t)
    return t


@contextlib.contextmanager
def atomic_output(target: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``target``; rename it onto ``target`` on success.

    Raises :class:`OutputExistsError` when ``target`` exists and ``force`` is false (checked before
    the block runs and again before the rename). When the block raises (including
    ``KeyboardInterrupt``) the temporary directory is removed and ``target`` is left untouched. With
    ``force`` an existing ``target`` is replaced only after the new one is complete.
    """
    t = check_output(target, force)
    t.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(t)
    tmp = Path(tempfile.mkdtemp(prefix=f".{t.name}{_TMP_MARK}{os.getpid()}-", dir=t.parent))
    try:
        yield tmp
        check_output(t, force)
        _umask_permissions(tmp)
        if t.exists() or t.is_symlink():
            old = t.with_name(f".{t.name}.old-{os.getpid()}-{time.monotonic_ns()}")
            t.rename(old)
            tmp.rename(t)
            _remove(old)
        else:
            tmp.rename(t)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` through a temporary file beside it and a rename, so a
    reader never sees half a file; the file gets the mode the user's umask gives (``mkstemp``'s 0600
    would survive the rename). Parent directories are created."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def job_dir_for(out: str | Path) -> Path:
    """Where a resumable job writing ``out`` keeps its progress: ``.{name}.quantmatch-job`` beside it
    (kept after an interruption, removed once ``out`` is complete)."""
    o = Path(out).absolute()
    return o.parent / f".{o.name}.quantmatch-job"


def current_umask() -> int:
    """The process's umask (read without changing it where ``/proc`` tells it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _umask_permissions(root: Path) -> None:
    """Give ``root`` and everything under it the modes a plain ``mkdir``/``open`` would have had: temporary
    directories and files are created private (0700/0600), which would survive the rename."""
    mask = current_umask()
    os.chmod(root, 0o777 & ~mask)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            path = os.path.join(dirpath, d)
            if not os.path.islink(path):
                os.chmod(path, 0o777 & ~mask)
        for f in filenames:
            path = os.path.join(dirpath, f)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & 0o111
                os.chmod(path, (0o666 | executable) & ~mask)


def library_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of the named distributions (those not installed are left out)."""
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


@dataclass
class Manifest:
    """What an artifact directory holds; written as ``quantmatch.json``.

    ``files`` maps each file (relative path) to its size in bytes; ``size_bytes`` is their sum.
    ``details`` carries method-specific facts (per-module precisions, calibration, GGUF type ...).
    """

    method: str
    scheme: str
    artifact_format: str
    source_model: str
    model_type: str = ""
    files: dict[str, int] = field(default_factory=dict)
    size_bytes: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    format: str = MANIFEST_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def write_manifest(directory: str | Path, manifest: Manifest) -> Manifest:
    """Record every file of ``directory`` with its size in ``manifest`` and write it there."""
    d = Path(directory)
    files = {str(f.relative_to(d)): f.stat().st_size for f in sorted(d.rglob("*"))
             if f.is_file() and f.name != MANIFEST_NAME}
    manifest.files = files
    manifest.size_bytes = sum(files.values())
    manifest.created = manifest.created or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    (d / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict(), indent=2, default=str) + "\n",
                                   encoding="utf-8")
    return manifest


def read_manifest(directory: str | Path) -> Manifest:
    """The manifest of an artifact directory; :class:`ArtifactError` when absent or unreadable."""
    d = Path(directory)
    path = d / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{d}: not a quantmatch artifact (no {MANIFEST_NAME}); give a directory "
                            "written by `quantmatch quantize`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: unreadable manifest ({e}); re-create the artifact with "
                            "`quantmatch quantize ... --force`") from e
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or "method" not in data:
        raise ArtifactError(f"{path}: not a {MANIFEST_FORMAT} manifest; re-create the artifact with "
                            "`quantmatch quantize ... --force`")
    return Manifest.from_dict(data)


def remake_command(directory: str | Path, manifest: Manifest) -> str:
    """The command that re-creates the artifact ``manifest`` describes in ``directory``."""
    return (f"`quantmatch quantize {manifest.source_model} --method {manifest.method} --scheme {manifest.scheme} "
            f"--out {directory} --force`")


def check_files(directory: str | Path, manifest: Manifest | None = None) -> Manifest:
    """The manifest of ``directory`` after checking that every file it records is there with its recorded
    size (a truncated copy is caught before a runtime tries to read it); :class:`ArtifactError` naming the
    command that re-creates the artifact otherwise."""
    d = Path(directory)
    m = manifest or read_manifest(d)
    for name, expected in m.files.items():
        path = d / name
        size = path.stat().st_size if path.is_file() else None
        if size is None or size != expected:
            found = "is missing" if size is None else f"has {size} bytes, the manifest records {expected}"
            raise ArtifactError(f"{path} {found} (truncated or corrupt); re-create it with "
                                f"{remake_command(d, m)}")
    return m
