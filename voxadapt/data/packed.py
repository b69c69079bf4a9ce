"""Strings packed into one bytes buffer: millions of paths without per-object Python overhead,
and nothing for copy-on-write to duplicate in forked DataLoader workers."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class PackedStrings:
    def __init__(self, items: Iterable[str]):
        encoded = [s.encode() for s in items]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self._buffer[self._offsets[i]:self._offsets[i + 1]].tobytes().decode()
