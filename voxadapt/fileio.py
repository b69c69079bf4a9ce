"""Crash-safe output: write to a temporary name, then rename; completion markers written last.

A stage killed half-way leaves only temporary names behind, never a file that a later stage
could mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from voxadapt.compat import canonical_fingerprint, changed_values, fingerprint_changes
from voxadapt.errors import VoxadaptError, first_line, located


def _tmp_name(path: Path) -> Path:
    """A fresh temporary name for `path`; temporaries of `path` left by a killed writer are removed
    first (every output has a single writer, so any other is stale)."""
    for stale in path.parent.glob(f".{path.name}.tmp*"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a table of a million small objects is built: each
    collection walks every object made so far, which makes the build quadratic."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path` (with `directory`, an empty directory there); on
    success it is fsynced and replaces `path` as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        if directory and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def atomic_dir(path: str | Path) -> contextlib.AbstractContextManager[Path]:
    """Yield an empty temporary directory; on success it replaces `path` as a whole."""
    return atomic_path(path, directory=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def recipe_path(path: str | Path) -> str:
    """`path` as data dirs record it: relative to the recipe root (the working directory of run.sh,
    Kaldi's convention) when it lies inside it, so a copied recipe with its data/ still works;
    absolute otherwise."""
    full = Path(path).resolve()
    try:
        return str(full.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(full)


def read_json(path: str | Path, fix: str) -> Any:
    """A JSON file the recipe wrote; damage is an error naming the file (and line) and `fix`."""
    path = Path(path)
    if not path.is_file():
        raise VoxadaptError(located(path, None, "missing", fix))
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise VoxadaptError(located(path, None, "not UTF-8 text (damaged)", fix)) from None
    except json.JSONDecodeError as err:
        raise VoxadaptError(located(path, err.lineno, f"not valid JSON ({err.msg})", fix)) from None


def read_safetensors(path: str | Path, fix: str) -> dict:
    """Tensors of a safetensors file (never pickles); a truncated or foreign file is named."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise VoxadaptError(located(path, None, "missing", fix))
    try:
        return load_file(str(path))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error type and OSError
        raise VoxadaptError(located(path, None, f"not a readable safetensors file ({first_line(err)})", fix)) from None


# Fingerprints hash contents, never paths or times, so a copied or moved experiment is
# recognised as the same one. Every hash in the recipe is one of these three.
def content_digest(parts: Iterable[bytes]) -> str:
    """sha1 of the concatenated parts."""
    h = hashlib.sha1()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def text_digest(text: str) -> str:
    return content_digest([text.encode()])


def file_digest(path: str | Path) -> str:
    """sha1 of a file's bytes, read in blocks."""
    with open(path, "rb") as f:
        return content_digest(iter(lambda: f.read(1 << 20), b""))


class StageMarker:
    """A completion marker holding a fingerprint of the settings that produced the outputs.

    Re-running with the same settings finds the marker and skips the work; different settings
    are refused, naming the outputs to delete, so results made with two configs never mix.
    """

    def __init__(self, path: str | Path, fingerprint: dict):
        self.path = Path(path)
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))

    def is_done(self, outputs_hint: str | Path | None = None, additions: bool = False) -> bool:
        """`outputs_hint`: what the marker vouches for; once deleted (as the error below asks), the
        marker is stale and the work is redone. `additions`: keys that are new since the marker
        (e.g. a trial list added) make it stale too, for work that is redone whole and cheaply."""
        if not self.path.is_file() or (outputs_hint is not None and not Path(outputs_hint).exists()):
            return False
        try:
            recorded = json.loads(self.path.read_text())
        except json.JSONDecodeError:
            return False  # a torn marker cannot vouch for anything: redo the work
        # Both in today's terms (voxadapt/compat.py): a marker written by an older version still vouches.
        recorded, current = canonical_fingerprint(recorded), canonical_fingerprint(self.fingerprint)
        if additions and isinstance(recorded, dict) and recorded == {k: v for k, v in current.items() if k in recorded} != current:
            return False
        if fingerprint_changes(recorded, current):
            where = outputs_hint or self.path.parent
            raise VoxadaptError(
                f"{where}: made with different settings ({changed_values(recorded, current)}); "
                f"delete {where} to redo it, or write elsewhere (run.sh --data/--exp, local/evaluate.sh --out)"
            )
        return True

    def mark_done(self) -> None:
        write_text_atomic(self.path, json.dumps(self.fingerprint, sort_keys=True, indent=1) + "\n")
