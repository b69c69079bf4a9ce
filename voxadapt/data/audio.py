"""Reading audio named by Kaldi rxfilenames: a plain path, or a shell command ending in '|'.

Pipes run through the shell exactly as Kaldi runs them; `VOXADAPT_NO_PIPES=1` refuses them for
data dirs from untrusted sources (a wav.scp pipe can run any command).
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from voxadapt.errors import DataError, VoxadaptError, first_line

if TYPE_CHECKING:
    from voxadapt.data.kaldi_dir import DataDir


# Audio whose every sample lies within this many 16-bit steps of its mean is silence, whether digital
# zeros or the +-1-2 steps that dither makes of them (`sox -n`, any 16-bit export of a silent track).
# Level normalisation would blow such noise up to speech level; no recorded voice, however quiet,
# stays this close (speech 30 dB below a normal level still peaks at hundreds of steps).
SILENCE_STEPS = 4


def near_silent(x: np.ndarray) -> bool:
    """Whether `x` (float samples in [-1, 1], any shape) is silence or dither (SILENCE_STEPS)."""
    return x.size == 0 or float(np.abs(x - x.mean(axis=-1, keepdims=True)).max()) < SILENCE_STEPS / 32768


def is_pipe(rx: str) -> bool:
    return rx.rstrip().endswith("|")


def _run_pipe(rx: str) -> bytes:
    if os.environ.get("VOXADAPT_NO_PIPES") == "1":
        raise DataError(f"'{rx}': wav.scp pipes are disabled (VOXADAPT_NO_PIPES=1); "
                        "convert the audio to files, or unset VOXADAPT_NO_PIPES for trusted data")
    cmd = rx.rstrip()[:-1]
    proc = subprocess.run(cmd, shell=True, capture_output=True, executable="/bin/bash")
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        detail = f": {reason[-1]}" if reason else ""
        raise DataError(f"command '{cmd}' failed with exit code {proc.returncode}{detail}; "
                        "run it by hand to see why")
    if not proc.stdout:
        raise DataError(f"command '{cmd}' wrote no audio; run it by hand to see why")
    return proc.stdout


def _open(rx: str) -> str | io.BytesIO:
    return io.BytesIO(_run_pipe(rx)) if is_pipe(rx) else rx


def _describe(rx: str, err: Exception) -> DataError:
    if not is_pipe(rx) and not os.path.exists(rx):
        if len(rx.split()) > 1 and shutil.which(rx.split()[0]):
            # 'sox a.flac -t wav -' is a command, but without the final '|' Kaldi reads it as a path
            return DataError(f"'{rx}': audio file not found; it looks like a command: end it with ' |' "
                             "to run it as a pipe")
        return DataError(f"'{rx}': audio file not found; fix the path in wav.scp")
    msg = first_line(err)
    return DataError(f"'{rx}': cannot decode audio ({msg}); re-encode it as WAV/FLAC or fix wav.scp")


def _wav_shortfall(path: str) -> int:
    """Bytes missing from a RIFF/WAVE file's data chunk (libsndfile silently reads what is there)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        size = os.fstat(f.fileno()).st_size
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return 0
            cid, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                return max(0, f.tell() + length - size) if length != 0xFFFFFFFF else 0
            f.seek(length + (length & 1), os.SEEK_CUR)


def read_audio(rx: str, start: float = 0.0, end: float | None = None) -> tuple[np.ndarray, int]:
    """All channels as float32 (channels, samples) between `start` and `end` seconds."""
    try:
        with sf.SoundFile(_open(rx)) as f:
            sr = f.samplerate
            first = int(round(start * sr))
            last = f.frames if end is None or end < 0 else min(f.frames, int(round(end * sr)))
            if first:
                f.seek(first)
            data = f.read(max(0, last - first), dtype="float32", always_2d=True)
    except DataError:
        raise
    except Exception as err:
        raise _describe(rx, err) from None
    missing = 0 if is_pipe(rx) else _wav_shortfall(rx)
    if len(data) < last - first or missing:
        detail = f"{missing} bytes short of its header" if missing else f"{len(data)} of {last - first} samples"
        raise DataError(f"'{rx}': truncated audio ({detail}); re-copy or re-encode the file")
    return data.T.copy(), sr


def rxfilename(recording) -> str:  # noqa: ANN001 - a lhotse Recording
    """A lhotse recording's audio as a Kaldi rxfilename ('path' or 'command |')."""
    src = recording.sources[0]
    return f"{src.source} |" if src.type == "command" else src.source


def read_samples(rx: str, start: int = 0, frames: int = -1) -> np.ndarray:
    """Mono float32 samples [start, start+frames) - the training hot path: a direct partial read
    for files; pipes are decoded whole and sliced."""
    if is_pipe(rx):
        audio, _ = read_audio(rx)
        x = audio[0, start:] if frames < 0 else audio[0, start:start + frames]
    else:
        x, _ = sf.read(rx, start=start, frames=frames, dtype="float32", always_2d=True)
        x = x[:, 0]
    return x


def read_utterance(d: DataDir, utt: str) -> np.ndarray:
    """Mono float32 samples of one utterance of a data dir (its segment, when there are segments)."""
    seg = d.segments[utt] if d.segments is not None else None
    try:
        audio, _ = read_audio(d.wav_scp[seg.recording if seg else utt], seg.start if seg else 0.0, seg.end if seg else None)
    except VoxadaptError as err:
        raise DataError(f"utterance '{utt}' of {d.path}: {err}") from None
    return audio[0]
