"""Kaldi's on-disk objects: vectors, matrices and the PLDA model, binary and text.

Binary files start with "\\0B"; a vector is the token "FV "/"DV ", an int32 size (a size byte 4,
then little-endian), then the raw values; a matrix is "FM "/"DM ", int32 rows, int32 cols, then
rows. Text files hold " [ 1 2 3 ]" for vectors and " [\\n  1 2 \\n  3 4 ]" for matrices. The
PLDA object (ivector-compute-plda) is "<Plda> " mean transform psi "</Plda> ".
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from voxadapt.errors import VoxadaptError, located
from voxadapt.fileio import atomic_path


class _Reader:
    """Reads Kaldi objects in sequence from one binary or text file."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = path.read_bytes()
        except FileNotFoundError:
            raise VoxadaptError(located(path, None, "file not found", "check the path")) from None
        self.binary = self.data.startswith(b"\0B")
        self.pos = 2 if self.binary else 0
        self.text = "" if self.binary else self.data.decode(errors="replace")

    def fail(self, what: str) -> VoxadaptError:
        return VoxadaptError(located(self.path, None, f"not a valid Kaldi {what}",
                                     "give a file written by Kaldi or voxadapt"))

    def token(self) -> str:
        if self.binary:
            end = self.data.find(b" ", self.pos)
            if end < 0:
                raise self.fail("object")
            tok, self.pos = self.data[self.pos:end].decode(errors="replace"), end + 1
            return tok
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        start = self.pos
        while self.pos < len(self.text) and not self.text[self.pos].isspace():
            self.pos += 1
        if start == self.pos:
            raise self.fail("object (unexpected end)")
        return self.text[start:self.pos]

    def _int32(self) -> int:
        if self.data[self.pos:self.pos + 1] != b"\x04" or self.pos + 5 > len(self.data):
            raise self.fail("object (bad or truncated integer)")
        value = struct.unpack("<i", self.data[self.pos + 1:self.pos + 5])[0]
        self.pos += 5
        return value

    def _floats(self, count: int, dtype: str) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        if count < 0 or self.pos + size > len(self.data):
            raise self.fail("object (truncated)")
        out = np.frombuffer(self.data[self.pos:self.pos + size], dtype=dtype).astype(np.float64)
        self.pos += size
        return out

    def _bracketed(self) -> str:
        if self.token() != "[":
            raise self.fail("vector or matrix")
        end = self.text.find("]", self.pos)
        if end < 0:
            raise self.fail("vector or matrix (no closing ']')")
        body, self.pos = self.text[self.pos:end], end + 1
        return body

    def vector(self) -> np.ndarray:
        if self.binary:
            tok = self.token()
            if tok not in ("FV", "DV"):
                raise self.fail("vector")
            return self._floats(self._int32(), "<f4" if tok == "FV" else "<f8")
        try:
            return np.array([float(x) for x in self._bracketed().split()])
        except ValueError:
            raise self.fail("vector (not numbers)") from None

    def matrix(self) -> np.ndarray:
        if self.binary:
            tok = self.token()
            if tok not in ("FM", "DM"):
                raise self.fail("matrix")
            rows, cols = self._int32(), self._int32()
            return self._floats(rows * cols, "<f4" if tok == "FM" else "<f8").reshape(rows, cols)
        try:
            rows = [[float(x) for x in line.split()] for line in self._bracketed().split("\n") if line.strip()]
        except ValueError:
            raise self.fail("matrix (not numbers)") from None
        if len({len(r) for r in rows}) > 1:
            raise self.fail("matrix (rows of different lengths)")
        return np.array(rows)


def _w_token(binary: bool, tok: str) -> bytes:
    return (tok + " ").encode()


def _w_vector(binary: bool, v: np.ndarray, double: bool) -> bytes:
    if binary:
        dt = "<f8" if double else "<f4"
        return (b"DV " if double else b"FV ") + b"\x04" + struct.pack("<i", len(v)) + np.asarray(v, dt).tobytes()
    return (" [ " + " ".join(f"{x:.9g}" for x in v) + " ]\n").encode()


def _w_matrix(binary: bool, m: np.ndarray, double: bool) -> bytes:
    m = np.atleast_2d(m)
    if binary:
        dt = "<f8" if double else "<f4"
        return ((b"DM " if double else b"FM ") + b"\x04" + struct.pack("<i", m.shape[0]) + b"\x04"
                + struct.pack("<i", m.shape[1]) + np.asarray(m, dt).tobytes())
    rows = "".join("\n  " + " ".join(f"{x:.9g}" for x in r) + " " for r in m)
    return (" [" + rows + "]\n").encode()


def _write(path: Path, payload: bytes, binary: bool) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes((b"\0B" if binary else b"") + payload)


def write_vector(path: str | Path, v: np.ndarray, binary: bool = True, double: bool = False) -> None:
    _write(Path(path), _w_vector(binary, v, double), binary)


def write_matrix(path: str | Path, m: np.ndarray, binary: bool = True, double: bool = False) -> None:
    _write(Path(path), _w_matrix(binary, m, double), binary)


def read_vector(path: str | Path) -> np.ndarray:
    return _Reader(Path(path)).vector()


def read_matrix(path: str | Path) -> np.ndarray:
    return _Reader(Path(path)).matrix()


def write_plda(path: str | Path, mean: np.ndarray, transform: np.ndarray, psi: np.ndarray, binary: bool = True) -> None:
    """Kaldi's Plda::Write: double-precision mean, transform and psi between <Plda> tokens."""
    payload = (_w_token(binary, "<Plda>") + _w_vector(binary, mean, True) + _w_matrix(binary, transform, True)
               + _w_vector(binary, psi, True) + _w_token(binary, "</Plda>"))
    _write(Path(path), payload, binary)


def read_plda(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = _Reader(Path(path))
    if r.token() != "<Plda>":
        raise r.fail("PLDA")
    mean, transform, psi = r.vector(), r.matrix(), r.vector()
    if r.token() != "</Plda>":
        raise r.fail("PLDA")
    d = len(mean)
    if transform.shape != (d, d) or len(psi) != d:
        raise VoxadaptError(located(path, None, f"inconsistent PLDA dimensions (mean {d}, transform "
                                    f"{transform.shape}, psi {len(psi)})", "re-train the PLDA"))
    return mean, transform, psi
