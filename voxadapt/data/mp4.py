"""The header of an MP4/M4A audio file (VoxCeleb2's AAC): rate, channels and duration without
decoding, for validating a million files in minutes instead of running ffmpeg on each.

Only the boxes on the path moov/trak/mdia/{mdhd, minf/stbl/stsd} and the edit list are read.
The duration is what a decoder outputs: the edit list's span when there is one (it hides the AAC
encoder's priming samples), else the media duration.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from voxadapt.errors import DataError

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}


@dataclass(frozen=True)
class Mp4Audio:
    sample_rate: int
    channels: int
    duration: float


def _boxes(data: bytes, start: int, end: int):  # noqa: ANN202 - yields (type, payload start, payload end)
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        head = 8
        if size == 1:
            size, head = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            raise ValueError(f"box '{kind.decode(errors='replace')}' overruns its parent")
        yield kind, pos + head, pos + size
        pos += size


def _find_moov(f: BinaryIO, file_size: int) -> bytes:
    pos = 0
    while pos + 8 <= file_size:
        f.seek(pos)
        head = f.read(16)
        size, kind = struct.unpack(">I4s", head[:8])
        hlen = 8
        if size == 1:
            size, hlen = struct.unpack(">Q", head[8:16])[0], 16
        elif size == 0:
            size = file_size - pos
        if size < hlen:
            raise ValueError("corrupt top-level box")
        if kind == b"moov":
            f.seek(pos)
            return f.read(size)
        pos += size
    raise ValueError("no 'moov' box (not an MP4 file, or truncated)")


def _descriptor(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, payload start, payload end) of an MPEG-4 descriptor (7-bit length continuation)."""
    tag, pos, length = data[pos], pos + 1, 0
    for _ in range(4):
        byte = data[pos]
        pos += 1
        length = (length << 7) | (byte & 0x7F)
        if not byte & 0x80:
            break
    return tag, pos, pos + length


def _channels(moov: bytes, entry: int, end: int) -> int:
    """Channels of an audio sample entry: from the AAC decoder config in 'esds' when there is one,
    because MP4 writers put a placeholder 2 in the entry's own channel field."""
    size = struct.unpack(">I", moov[entry:entry + 4])[0]
    channels = struct.unpack(">H", moov[entry + 24:entry + 26])[0]
    for kind, a, _ in _boxes(moov, entry + 36, min(entry + size, end)):
        if kind != b"esds":
            continue
        tag, x, y = _descriptor(moov, a + 4)  # ES_Descriptor after version/flags
        if tag != 3:
            break
        flags = moov[x + 2]
        x += 3 + (2 if flags & 0x80 else 0) + (1 + moov[x + 3] if flags & 0x40 else 0) + (2 if flags & 0x20 else 0)
        tag, x, y = _descriptor(moov, x)  # DecoderConfigDescriptor
        if tag != 4:
            break
        tag, x, y = _descriptor(moov, x + 13)  # DecoderSpecificInfo: the AudioSpecificConfig
        if tag == 5 and y - x >= 2:
            bits = int.from_bytes(moov[x:x + 5].ljust(5, b"\0"), "big")
            aot_bits, rate_index = 5, (bits >> 31) & 0xF
            config = (bits >> (40 - aot_bits - 4 - (24 if rate_index == 15 else 0) - 4)) & 0xF
            if config:
                return 8 if config == 7 else config
    return channels


def _collect(data: bytes, lo: int, hi: int, found: dict[bytes, tuple[int, int]]) -> None:
    """The first box of each type under [lo, hi), descending into the container boxes."""
    for kind, a, b in _boxes(data, lo, hi):
        found.setdefault(kind, (a, b))
        if kind in _CONTAINERS:
            _collect(data, a, b, found)


def _audio_track(moov: bytes) -> tuple[int, int, int, int, list[int]]:
    """(movie timescale, media timescale, media duration, channels/rate packed, edit durations)."""
    movie_scale = 0
    for kind, a, _ in _boxes(moov, 8, len(moov)):
        if kind == b"mvhd":
            v = moov[a]
            movie_scale = struct.unpack(">I", moov[a + (20 if v == 1 else 12):][:4])[0]
    for kind, a, b in _boxes(moov, 8, len(moov)):
        if kind != b"trak":
            continue
        found: dict[bytes, tuple[int, int]] = {}
        _collect(moov, a, b, found)
        if b"hdlr" not in found or moov[found[b"hdlr"][0] + 8:found[b"hdlr"][0] + 12] != b"soun":
            continue
        x, _ = found[b"mdhd"]
        if moov[x] == 1:
            scale, duration = struct.unpack(">IQ", moov[x + 20:x + 32])
        else:
            scale, duration = struct.unpack(">II", moov[x + 12:x + 20])
        sx, sy = found[b"stsd"]  # version/flags, entry count, then the first sample entry
        channels = _channels(moov, sx + 8, sy)
        edits: list[int] = []
        if b"elst" in found:
            ex, _ = found[b"elst"]
            v, n = moov[ex], struct.unpack(">I", moov[ex + 4:ex + 8])[0]
            width = 20 if v == 1 else 12
            for i in range(n):
                entry = moov[ex + 8 + i * width:ex + 8 + (i + 1) * width]
                span, media_time = struct.unpack(">Qq" if v == 1 else ">Ii", entry[:16 if v == 1 else 8])
                if media_time != -1:  # -1: an empty edit (a delay), not decoded audio
                    edits.append(span)
        return movie_scale, scale, duration, channels, edits
    raise ValueError("no audio track")


def mp4_audio(path: str | Path) -> Mp4Audio:
    """Rate, channels and decoded duration from the header; DataError naming the file if unreadable."""
    try:
        with open(path, "rb") as f:
            moov = _find_moov(f, Path(path).stat().st_size)
        movie_scale, scale, duration, channels, edits = _audio_track(moov)
    except FileNotFoundError:
        raise DataError(f"'{path}': audio file not found") from None
    except (ValueError, struct.error, KeyError, IndexError) as err:
        raise DataError(f"'{path}': not a readable MP4 audio header ({err})") from None
    if scale <= 0:
        raise DataError(f"'{path}': MP4 audio track has no time scale")
    seconds = sum(edits) / movie_scale if edits and movie_scale else duration / scale
    # For audio the media time scale is the sample rate (as ffmpeg and VoxCeleb's files write it).
    return Mp4Audio(scale, channels, seconds)
