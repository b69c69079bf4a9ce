"""Kaldi's on-disk objects: vectors and matrices through kaldiio, and the PLDA model container.

Vectors and matrices are binary ("\\0B" + FV/DV/FM/DM) or text (" [ 1 2 3 ]"); kaldiio writes
both and reads the binary form. Its text reader is not used: it guesses int32 or float32 from
the first number (so "[ 2 0.5 ]" fails and doubles lose precision), so text is parsed here as
float64. Nor is its general loader, which follows pipes in file names and unpickles "PKL"
objects. The PLDA object (ivector-compute-plda) is "<Plda> " mean transform psi "</Plda> ",
whose parts carry no binary marker of their own: that container is read and written here.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from kaldiio.matio import read_matrix_or_vector, write_array, write_array_ascii

from voxadapt.errors import VoxadaptError, located
from voxadapt.fileio import atomic_path

BINARY = b"\0B"


def _fail(path: Path, what: str) -> VoxadaptError:
    return VoxadaptError(located(path, None, f"not a valid Kaldi {what}", "give a file written by Kaldi or voxadapt"))


def _open(path: Path) -> tuple[BinaryIO, bool]:
    """The file, positioned after the binary marker if there is one, and whether it is binary."""
    if not path.is_file():
        raise VoxadaptError(located(path, None, "file not found", "check the path"))
    fd = io.BytesIO(path.read_bytes())
    binary = fd.read(2) == BINARY
    fd.seek(2 if binary else 0)
    return fd, binary


def _read_array(fd: BinaryIO, binary: bool, ndim: int, path: Path, what: str) -> np.ndarray:
    try:
        if binary:  # kaldiio expects each object to carry the marker: give it one
            start = fd.tell()
            array, size = read_matrix_or_vector(io.BytesIO(BINARY + fd.read()), return_size=True)
            fd.seek(start + size - len(BINARY))
        else:
            array = _read_text_array(fd)
    except Exception:  # noqa: BLE001 - kaldiio fails on damaged input with asserts and several error types
        raise _fail(path, what) from None
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != ndim:
        raise _fail(path, what)
    return array


def _read_text_array(fd: BinaryIO) -> np.ndarray:
    """' [ 1 2 ]' (vector) or ' [\\n  1 2 \\n  3 4 ]' (matrix: rows on lines of their own)."""
    if _read_token(fd) != "[":
        raise ValueError("no '['")
    body = b""
    while (c := fd.read(1)) != b"]":
        if not c:
            raise ValueError("no ']'")
        body += c
    rows = [[float(x) for x in line.split()] for line in body.decode().split("\n")]
    if "\n" not in body.decode().strip(" "):
        return np.array(rows[0], dtype=np.float64)
    rows = [r for r in rows if r]
    if len({len(r) for r in rows}) > 1:
        raise ValueError("rows of different lengths")
    return np.array(rows, dtype=np.float64).reshape(len(rows), -1)


def _read_token(fd: BinaryIO) -> str:
    out = b""
    while (c := fd.read(1)) and c.isspace() and not out:
        pass
    while c and not c.isspace():
        out += c
        c = fd.read(1)
    return out.decode(errors="replace")


def read_vector(path: str | Path) -> np.ndarray:
    fd, binary = _open(Path(path))
    return _read_array(fd, binary, 1, Path(path), "vector")


def read_matrix(path: str | Path) -> np.ndarray:
    fd, binary = _open(Path(path))
    return _read_array(fd, binary, 2, Path(path), "matrix")


def _write_array(fd: BinaryIO, array: np.ndarray, binary: bool) -> None:
    if binary:
        part = io.BytesIO()
        write_array(part, array)
        fd.write(part.getvalue()[len(BINARY):])  # the file's marker is written once, at its start
    else:
        write_array_ascii(fd, array, digit=".9g")


def _write(path: Path, arrays: list[np.ndarray], binary: bool, tokens: tuple[str, str] | None = None) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fd:
        if binary:
            fd.write(BINARY)
        if tokens:
            fd.write(f"{tokens[0]} ".encode())
        for a in arrays:
            _write_array(fd, a, binary)
        if tokens:
            fd.write(f"{tokens[1]} ".encode())


def write_vector(path: str | Path, v: np.ndarray, binary: bool = True, double: bool = False) -> None:
    _write(Path(path), [np.asarray(v, np.float64 if double else np.float32).ravel()], binary)


def write_matrix(path: str | Path, m: np.ndarray, binary: bool = True, double: bool = False) -> None:
    _write(Path(path), [np.atleast_2d(np.asarray(m, np.float64 if double else np.float32))], binary)


def write_plda(path: str | Path, mean: np.ndarray, transform: np.ndarray, psi: np.ndarray, binary: bool = True) -> None:
    """Kaldi's Plda::Write: double-precision mean, transform and psi between <Plda> tokens."""
    arrays = [np.asarray(mean, np.float64), np.atleast_2d(np.asarray(transform, np.float64)), np.asarray(psi, np.float64)]
    _write(Path(path), arrays, binary, ("<Plda>", "</Plda>"))


def read_plda(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    path = Path(path)
    fd, binary = _open(path)
    if _read_token(fd) != "<Plda>":
        raise _fail(path, "PLDA")
    mean = _read_array(fd, binary, 1, path, "PLDA")
    transform = _read_array(fd, binary, 2, path, "PLDA")
    psi = _read_array(fd, binary, 1, path, "PLDA")
    if _read_token(fd) != "</Plda>":
        raise _fail(path, "PLDA")
    d = len(mean)
    if transform.shape != (d, d) or len(psi) != d:
        raise VoxadaptError(located(path, None, f"inconsistent PLDA dimensions (mean {d}, transform "
                                    f"{transform.shape}, psi {len(psi)})", "re-train the PLDA"))
    return mean, transform, psi
