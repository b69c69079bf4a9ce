"""Crash-safe output: write to a temporary name, then rename; completion markers written last.

A stage killed half-way leaves only temporary names behind, never a file that a later stage
could mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from voxadapt.errors import VoxadaptError


def _tmp_name(path: Path) -> Path:
    """A fresh temporary name for `path`; temporaries of `path` left by a killed writer are removed
    first (every output has a single writer, so any other is stale)."""
    for stale in path.parent.glob(f".{path.name}.tmp*"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is fsynced and renamed to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces `path` as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class StageMarker:
    """A completion marker holding a fingerprint of the settings that produced the outputs.

    Re-running with the same settings finds the marker and skips the work; different settings
    are refused, naming the outputs to delete, so results made with two configs never mix.
    """

    def __init__(self, path: str | Path, fingerprint: dict):
        self.path = Path(path)
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))

    def is_done(self, outputs_hint: str | Path | None = None) -> bool:
        if not self.path.is_file():
            return False
        try:
            recorded = json.loads(self.path.read_text())
        except json.JSONDecodeError:
            return False  # a torn marker cannot vouch for anything: redo the work
        if recorded != self.fingerprint:
            changed = sorted(
                k for k in set(recorded) | set(self.fingerprint) if recorded.get(k) != self.fingerprint.get(k)
            )
            where = outputs_hint or self.path.parent
            raise VoxadaptError(
                f"{where}: made with different settings ({', '.join(changed)} changed); "
                f"delete {where} to redo it, or use another --data/--exp directory"
            )
        return True

    def mark_done(self) -> None:
        write_text_atomic(self.path, json.dumps(self.fingerprint, sort_keys=True, indent=1) + "\n")

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
