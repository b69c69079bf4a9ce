"""User-facing errors: each carries a one-line message naming the file (and line) and the fix."""

from __future__ import annotations

from pathlib import Path


class VoxadaptError(Exception):
    """An error caused by the user's input or environment, reported without a traceback."""


class ConfigError(VoxadaptError):
    """A YAML config or command-line override is invalid."""


class DataError(VoxadaptError):
    """A data dir, trial list, manifest or audio file is invalid."""


def located(path: str | Path, line: int | None, message: str, fix: str = "") -> str:
    """Format 'path:line: message; fix' as one line."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    text = f"{where}: {message}"
    return f"{text}; {fix}" if fix else text


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type when it has none."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(err).__name__
