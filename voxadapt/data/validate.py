"""Validate a Kaldi data dir (tables and audio), and fix what can be fixed by dropping entries.

Validation decodes every recording (in `nj` processes): existence, decodability, truncation,
sample rate, channel count, duration and silence. It returns the durations, which the caller
writes as reco2dur so later stages never open the audio just to learn its length.
"""

from __future__ import annotations

import logging
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from voxadapt.data.audio import read_audio
from voxadapt.data.kaldi_dir import DataDir, write_table
from voxadapt.errors import DataError, VoxadaptError, located

log = logging.getLogger(__name__)

SILENCE_PEAK = 1.0 / 32768  # below one 16-bit step everywhere: digital silence


@dataclass(frozen=True)
class RecordingCheck:
    recording: str
    duration: float = 0.0
    error: str | None = None


def check_recording(item: tuple[str, str, int, float]) -> RecordingCheck:
    reco, rx, sample_rate, min_duration = item
    try:
        audio, sr = read_audio(rx)
    except VoxadaptError as err:
        return RecordingCheck(reco, error=str(err))
    duration = audio.shape[1] / sr
    if sr != sample_rate:
        return RecordingCheck(reco, duration, f"sample rate {sr} Hz, expected {sample_rate} Hz; resample it "
                              f"(e.g. a wav.scp pipe 'sox {{file}} -r {sample_rate} -t wav - |')")
    if audio.shape[0] != 1:
        return RecordingCheck(reco, duration, f"{audio.shape[0]} channels, the recipe needs mono; pick one "
                              "channel (e.g. a wav.scp pipe 'sox {file} -t wav - remix 1 |')")
    if duration < min_duration:
        return RecordingCheck(reco, duration, f"only {duration:.3f} s long (minimum {min_duration} s); "
                              "remove it with utils/fix_data_dir.sh after deleting its wav.scp line")
    if audio.size and float(np.abs(audio).max()) < SILENCE_PEAK:
        return RecordingCheck(reco, duration, "silent (all samples are zero); remove it from the data dir")
    return RecordingCheck(reco, duration)


def validate_data_dir(path: str | Path, sample_rate: int, min_duration: float = 0.2,
                      check_audio: bool = True, nj: int = 1) -> DataDir:
    """Check tables (and audio); return the DataDir with `reco2dur` filled in when audio was read."""
    d = DataDir.load(path)
    if check_audio:
        items = [(r, rx, sample_rate, min_duration) for r, rx in sorted(d.wav_scp.items())]
        chunk = max(1, len(items) // (nj * 20))
        if nj > 1:
            with ProcessPoolExecutor(nj) as pool:
                results = list(tqdm(pool.map(check_recording, items, chunksize=chunk), total=len(items),
                                    desc=f"checking audio of {d.path}", leave=False, mininterval=5))
        else:
            results = [check_recording(i) for i in tqdm(items, desc=f"checking audio of {d.path}",
                                                         leave=False, mininterval=5)]
        for res in results:
            if res.error:
                raise DataError(located(d.path / "wav.scp", d.lines["wav.scp"][res.recording],
                                        f"recording '{res.recording}': {res.error}"))
        d.reco2dur = {r.recording: r.duration for r in results}
    if d.segments is not None and d.reco2dur is not None:
        for utt, seg in d.segments.items():
            dur = d.reco2dur[seg.recording]
            end = dur if seg.end == -1 else seg.end
            if end > dur + 0.02:
                raise DataError(located(d.path / "segments", d.lines["segments"][utt],
                                        f"segment '{utt}' ends at {seg.end} s but its recording lasts {dur:.3f} s",
                                        "fix the end time"))
            if end - seg.start < min_duration:
                raise DataError(located(d.path / "segments", d.lines["segments"][utt],
                                        f"segment '{utt}' is shorter than {min_duration} s", "remove it"))
    return d


# ------------------------------------------------------------------------------------- fixing


def _lenient_table(path: Path, fields: int | None, report: list[str]) -> dict[str, str]:
    """Read a table keeping the first of duplicate keys and skipping malformed lines."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        parts = line.strip().split(maxsplit=1)
        if len(parts) < 2 or (fields is not None and len(parts[1].split()) != fields - 1):
            if line.strip():
                report.append(f"{path.name}:{lineno}: dropped malformed line {line.strip()!r}")
            continue
        key, value = parts
        if key in out:
            report.append(f"{path.name}:{lineno}: dropped duplicate '{key}'")
            continue
        out[key] = value
    return out


def fix_data_dir(path: str | Path) -> list[str]:
    """Sort the tables, drop malformed, duplicate and inconsistent entries, regenerate spk2utt.

    Returns one line per dropped entry. Originals are kept in `<dir>/.backup/`.
    """
    path = Path(path)
    if not (path / "wav.scp").is_file() or not (path / "utt2spk").is_file():
        raise DataError(located(path, None, "not a Kaldi data dir (needs wav.scp and utt2spk)",
                                "check the path"))
    report: list[str] = []
    wav = _lenient_table(path / "wav.scp", None, report)
    utt2spk = _lenient_table(path / "utt2spk", 2, report)
    seg_raw = _lenient_table(path / "segments", 4, report) if (path / "segments").is_file() else None
    segments = None
    if seg_raw is not None:
        segments = {}
        for utt, value in seg_raw.items():
            reco, start, end = value.split()
            try:
                s, e = float(start), float(end)
                ok = s >= 0 and (e == -1 or e > s)
            except ValueError:
                ok = False
            if not ok:
                report.append(f"segments: dropped '{utt}' (bad times {start} {end})")
            elif reco not in wav:
                report.append(f"segments: dropped '{utt}' (recording '{reco}' not in wav.scp)")
            else:
                segments[utt] = value
        utts = set(segments) & set(utt2spk)
        for u in sorted(set(segments) - utts):
            report.append(f"segments: dropped '{u}' (not in utt2spk)")
            del segments[u]
        used = {v.split()[0] for v in segments.values()}
    else:
        utts = set(wav) & set(utt2spk)
        used = utts
    for u in sorted(set(utt2spk) - utts):
        report.append(f"utt2spk: dropped '{u}' (no audio for it)")
    for r in sorted(set(wav) - used):
        report.append(f"wav.scp: dropped '{r}' (no utterance uses it)")
    if not utts:
        raise DataError(located(path, None, "no usable utterance would be left after fixing",
                                "check that wav.scp, utt2spk and segments use the same ids"))
    backup = path / ".backup"
    backup.mkdir(exist_ok=True)
    for name in ("wav.scp", "utt2spk", "spk2utt", "segments", "reco2dur"):
        if (path / name).is_file():
            shutil.copy2(path / name, backup / name)
    reco2dur = _lenient_table(path / "reco2dur", 2, [])
    write_table(path / "wav.scp", ((r, wav[r]) for r in used))
    write_table(path / "utt2spk", ((u, utt2spk[u]) for u in utts))
    spk2utt: dict[str, list[str]] = {}
    for u in sorted(utts):
        spk2utt.setdefault(utt2spk[u], []).append(u)
    write_table(path / "spk2utt", ((s, " ".join(us)) for s, us in spk2utt.items()))
    if segments is not None:
        write_table(path / "segments", segments.items())
    if reco2dur and set(reco2dur) >= used:
        write_table(path / "reco2dur", ((r, reco2dur[r]) for r in used))
    else:
        (path / "reco2dur").unlink(missing_ok=True)
    return report
