"""Kaldi's on-disk objects: vectors and matrices through kaldiio, and the PLDA model container.

Vectors and matrices are binary ("\\0B" + FV/DV/FM/DM) or text (" [ 1 2 3 ]"); kaldiio writes
both and reads the binary form. Its text reader is not used: it guesses int32 or float32 from
the first number (so "[ 2 0.5 ]" fails and doubles lose precision), so text is parsed here as
float64. Nor is its general loader, which follows pipes in file names and unpickles "PKL"
objects. The PLDA object (ivector-compute-plda) is "<Plda> " mean transform psi "</Plda> ",
whose parts carry no binary marker of their own: that container is read and written here.

Single objects are read from Kaldi rxfilenames: a file, '-' (stdin) or 'command |' (its output,
e.g. "ivector-copy-plda --smoothing=0.1 plda - |").
"""

from __future__ import annotations

import io
import mmap
import re
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

import kaldiio
import numpy as np
from kaldiio.matio import read_matrix_or_vector, write_array, write_array_ascii

from voxadapt.data.kaldi_dir import read_key_values
from voxadapt.errors import VoxadaptError, first_line, located
from voxadapt.fileio import atomic_path

BINARY = b"\0B"
# A binary vector in an archive: marker, type token, int32 size (4) and the length, then the data.
VECTOR_TYPES = {b"FV ": np.dtype("<f4"), b"DV ": np.dtype("<f8")}
VECTOR_HEADER = 10
GATHER_ROWS = 1_024  # vectors copied out of an archive per step


def _fail(path: str | Path, what: str) -> VoxadaptError:
    return VoxadaptError(located(path, None, f"not a valid Kaldi {what}", "give a file written by Kaldi or voxadapt"))


def read_rxfilename(rxfilename: str | Path) -> bytes:
    """The bytes of a Kaldi rxfilename: a file, '-' for stdin, or 'command |'."""
    text = str(rxfilename)
    if text == "-":
        return sys.stdin.buffer.read()
    if text.rstrip().endswith("|"):
        proc = subprocess.run(text.rstrip()[:-1], shell=True, capture_output=True)
        if proc.returncode != 0:
            said = proc.stderr.decode(errors="replace").strip().splitlines()
            raise VoxadaptError(located(text, None, f"the command failed (exit {proc.returncode})"
                                        + (f": {said[-1]}" if said else ""), "run it by hand to see why"))
        return proc.stdout
    path = Path(text)
    if not path.is_file():
        raise VoxadaptError(located(path, None, "file not found", "check the path"))
    return path.read_bytes()


def _open(path: str | Path) -> tuple[BinaryIO, bool]:
    """The object's bytes, positioned after the binary marker if there is one, and whether it is binary."""
    fd = io.BytesIO(read_rxfilename(path))
    binary = fd.read(2) == BINARY
    fd.seek(2 if binary else 0)
    return fd, binary


def _read_array(fd: BinaryIO, binary: bool, ndim: int, path: str | Path, what: str) -> np.ndarray:
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
    fd, binary = _open(path)
    return _read_array(fd, binary, 1, path, "vector")


def read_matrix(path: str | Path) -> np.ndarray:
    fd, binary = _open(path)
    return _read_array(fd, binary, 2, path, "matrix")


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


def read_vector_scp(scp: Path) -> tuple[list[str], np.ndarray]:
    """The vectors of a Kaldi scp as (keys, float32 matrix), in scp order.

    Entries 'archive:offset' holding binary float or double vectors (what Kaldi tools and stage 5
    write) are gathered from each archive at once; anything else (pipes, text, slices, a damaged
    record) goes through kaldiio one entry at a time, so errors still name the scp line.
    """
    if not scp.is_file():
        raise VoxadaptError(located(scp, None, "x-vector list not found", "run stage 5, or check the path"))
    keys, rxfilenames = read_key_values(scp)  # BOMs, CR LF, blank or one-field lines: named by line
    if not keys:
        raise VoxadaptError(located(scp, None, "empty x-vector list", "run stage 5"))
    by_archive: dict[str, tuple[list[int], list[int]]] = {}
    for i, rxfilename in enumerate(rxfilenames):
        archive, _, offset = rxfilename.rpartition(":")
        if archive and offset.isdigit():
            entries, offsets = by_archive.setdefault(archive, ([], []))
            entries.append(i)
            offsets.append(int(offset))
    blocks = [block for archive, (entries, offsets) in by_archive.items()
              for block in _binary_vectors(Path(archive), np.array(entries), np.array(offsets))]
    done = np.zeros(len(keys), bool)
    for entries, _ in blocks:
        done[entries] = True
    others = {int(i): _load_entry(scp, int(i) + 1, keys[i], rxfilenames[i]) for i in np.flatnonzero(~done)}
    dims = {block.shape[1] for _, block in blocks} | {len(v) for v in others.values()}
    if len(dims) > 1:
        raise VoxadaptError(located(scp, None, f"x-vectors of mixed dimensions {sorted(dims)}",
                                    "all vectors must come from one model"))
    matrix = np.empty((len(keys), dims.pop()), np.float32)
    for entries, block in blocks:
        matrix[entries] = block
    for i, vec in others.items():
        matrix[i] = vec
    bad = np.flatnonzero(~np.isfinite(matrix).all(1))
    if len(bad):
        raise VoxadaptError(located(scp, bad[0] + 1, f"x-vector of '{keys[bad[0]]}' has NaN or Inf", "re-extract it"))
    return keys, matrix


RSPECIFIER = re.compile(r"^(ark|scp)((?:,[a-z]+)*):(.+)$", re.S)


def read_vectors(spec: str | Path) -> tuple[list[str], np.ndarray]:
    """The vectors of an x-vector table as (keys, float32 matrix), in order: an scp file, an archive
    (a path ending .ark), or a Kaldi rspecifier (scp:F, ark:F, ark:- for stdin, 'ark:cmd |')."""
    found = RSPECIFIER.match(str(spec))
    if found and found[1] == "scp":
        return read_vector_scp(Path(found[3]))
    if found or str(spec).endswith(".ark"):
        return read_vector_archive(found[3] if found else str(spec))
    return read_vector_scp(Path(spec))


def read_vector_archive(rxfilename: str) -> tuple[list[str], np.ndarray]:
    """The vectors of a Kaldi archive (binary or text) read from a file, '-' (stdin) or 'command |'."""
    if not rxfilename.rstrip().endswith("|") and rxfilename != "-" and not Path(rxfilename).is_file():
        raise VoxadaptError(located(rxfilename, None, "x-vector archive not found", "run stage 5, or check the path"))
    fd = io.BytesIO(read_rxfilename(rxfilename))
    keys, vectors = [], []
    while key := _read_token(fd):
        what = f"vector archive (entry {len(keys) + 1}, '{key}')"
        if fd.read(2) == BINARY:  # read here: _read_array copies the rest of the archive for each object
            head = fd.read(VECTOR_HEADER - len(BINARY))
            dtype = VECTOR_TYPES.get(head[:3])
            size = int.from_bytes(head[4:], "little") * (dtype.itemsize if dtype else 0)
            data = fd.read(size)
            if dtype is None or head[3:4] != b"\4" or len(data) != size:
                raise _fail(rxfilename, what)
            vectors.append(np.frombuffer(data, dtype))
        else:
            fd.seek(-2, io.SEEK_CUR)
            vectors.append(_read_array(fd, False, 1, rxfilename, what))
        keys.append(key)
    if not keys:
        raise VoxadaptError(located(rxfilename, None, "empty x-vector archive", "run stage 5"))
    if len({len(v) for v in vectors}) > 1:
        raise VoxadaptError(located(rxfilename, None, f"x-vectors of mixed dimensions {sorted({len(v) for v in vectors})}",
                                    "all vectors must come from one model"))
    matrix = np.array(vectors, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(matrix).all(1))
    if len(bad):
        raise VoxadaptError(located(rxfilename, None, f"x-vector of '{keys[bad[0]]}' has NaN or Inf", "re-extract it"))
    return keys, matrix


def _binary_vectors(archive: Path, entries: np.ndarray, offsets: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(entries, float32 rows) for the records at `offsets` that are whole binary vectors, one
    pair per type and length; the other entries are left out."""
    try:  # mapped, not read: after stage 5 the archive's pages are in the page cache
        with open(archive, "rb") as f:
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # map every page at once: fewer faults
            data = np.frombuffer(mmap.mmap(f.fileno(), 0, flags=flags, prot=mmap.PROT_READ), np.uint8)
    except (OSError, ValueError):  # missing, unreadable or empty: kaldiio names it on each entry's line
        return []
    inside = offsets + VECTOR_HEADER <= len(data)
    entries, offsets = entries[inside], offsets[inside]
    headers = data[offsets[:, None] + np.arange(VECTOR_HEADER)]
    dims = headers[:, 6:].copy().view("<i4").ravel()
    out = []
    for token, dtype in VECTOR_TYPES.items():
        expected = np.frombuffer(BINARY + token + b"\x04", np.uint8)
        is_type = (headers[:, :6] == expected).all(1)
        for dim in np.unique(dims[is_type]):
            nbytes = int(dim) * dtype.itemsize
            take = is_type & (dims == dim) & (offsets + VECTOR_HEADER + nbytes <= len(data))
            if dim <= 0 or not take.any():
                continue
            starts = offsets[take] + VECTOR_HEADER
            rows = np.empty((len(starts), dim), np.float32)
            span = np.arange(nbytes)
            for s in range(0, len(starts), GATHER_ROWS):
                rows[s:s + GATHER_ROWS] = data[starts[s:s + GATHER_ROWS, None] + span].view(dtype)
            out.append((entries[take], rows))
    return out


def _load_entry(scp: Path, lineno: int, key: str, rxfilename: str) -> np.ndarray:
    try:
        vec = np.asarray(kaldiio.load_mat(rxfilename))
    except Exception as err:  # noqa: BLE001 - kaldiio raises several kinds for bad archives
        raise VoxadaptError(located(scp, lineno, f"unreadable x-vector ({type(err).__name__}: {first_line(err)})",
                                    "re-extract it, or fix the scp line")) from None
    if vec.ndim != 1:
        raise VoxadaptError(located(scp, lineno, f"'{key}' is a matrix, not a vector", "give x-vectors"))
    return vec
