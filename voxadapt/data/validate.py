"""Validate a Kaldi data dir (tables and audio), and fix what can be fixed by dropping entries.

Audio is checked in one of two ways (`AudioCheck`; 'auto' picks 'header' above AUTO_DECODE_LIMIT
recordings or AUTO_DECODE_PIPES pipes, else 'decode'), in `nj` processes:
  decode  every recording is decoded: existence, decodability, truncation, sample rate, channel
          count, duration and silence.
  header  files: the header only (libsndfile's, or the MP4 box header of .m4a/.mp4): existence,
          format, sample rate, channels and duration. Pipes ('... |') take their duration from
          the dir's reco2dur (the VoxCeleb import writes it from the MP4 headers; Kaldi's
          get_reco2dur.sh writes it for your dirs); pipes without one are decoded. Then a seeded
          sample of `sample` recordings is decoded in full, and its decoded durations must match
          the headers: a broken decoder or codec fails here instead of in training.
          Not checked outside the sample: damaged data after a good header, and silence.
Both return the durations, which the caller writes as reco2dur so later stages never open the
audio just to learn its length. Every faulty recording is reported in one run (a warning each, and
one error with a count per kind of fault).
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Collection
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from tqdm import tqdm

from voxadapt.data.audio import SILENCE_STEPS, is_pipe, near_silent, read_audio
from voxadapt.data.kaldi_dir import DataDir, write_table
from voxadapt.data.mp4 import mp4_audio
from voxadapt.errors import DataError, VoxadaptError, located

log = logging.getLogger(__name__)

# 'auto' decodes at most this many recordings, of which at most this many pipes (a pipe starts a
# decoder process: ~50 ms each for ffmpeg on m4a, so VoxCeleb2's 1.09 M would take hours).
AUTO_DECODE_LIMIT = 20_000
AUTO_DECODE_PIPES = 2_000
HEADER_TOLERANCE = 0.1  # s: AAC decoders pad to whole 1024-sample frames (64 ms at 16 kHz)
MP4_SUFFIXES = (".m4a", ".mp4")

AudioCheck = Literal["auto", "decode", "header", "none"]


MAX_LISTED_FAULTS = 5  # recordings named in the error; the log has a warning for each


@dataclass(frozen=True)
class RecordingCheck:
    recording: str
    duration: float = 0.0
    error: str | None = None
    kind: str = "unreadable"  # of the error: unreadable, sample rate, channels, too short, silent


def audio_check(mode: AudioCheck, rxfilenames: Collection[str]) -> AudioCheck:
    """What `mode` means for these wav.scp entries ('auto' becomes 'decode' or 'header')."""
    if mode == "auto":
        pipes = sum(1 for rx in rxfilenames if is_pipe(rx))
        return "decode" if len(rxfilenames) <= AUTO_DECODE_LIMIT and pipes <= AUTO_DECODE_PIPES else "header"
    return mode


def _judge(reco: str, duration: float, sr: int, channels: int, sample_rate: int, min_duration: float) -> RecordingCheck:
    if sr != sample_rate:
        return RecordingCheck(reco, duration, f"sample rate {sr} Hz, expected {sample_rate} Hz; resample it "
                              f"(e.g. a wav.scp pipe 'sox {{file}} -r {sample_rate} -t wav - |')", "sample rate")
    if channels != 1:
        return RecordingCheck(reco, duration, f"{channels} channels, the recipe needs mono; pick one "
                              "channel (e.g. a wav.scp pipe 'sox {file} -t wav - remix 1 |')", "channels")
    if duration < min_duration:
        return RecordingCheck(reco, duration, f"only {duration:.3f} s long (minimum {min_duration} s); "
                              "remove it with utils/fix_data_dir.sh --drop-bad-audio true", "too short")
    return RecordingCheck(reco, duration)


def check_recording(item: tuple[str, str, int, float]) -> RecordingCheck:
    """Decode the whole recording."""
    reco, rx, sample_rate, min_duration = item
    try:
        audio, sr = read_audio(rx)
    except VoxadaptError as err:
        return RecordingCheck(reco, error=str(err))
    res = _judge(reco, audio.shape[1] / sr, sr, audio.shape[0], sample_rate, min_duration)
    if res.error is None and audio.size and near_silent(audio):
        return RecordingCheck(reco, res.duration, f"silent (no sample {SILENCE_STEPS} 16-bit steps from its mean: "
                              "digital silence or dither); remove it from the data dir", "silent")
    return res


def check_header(item: tuple[str, str, int, float, float | None]) -> RecordingCheck:
    """Read the header of a file; a pipe's duration is `known` (from reco2dur), or it is decoded."""
    reco, rx, sample_rate, min_duration, known = item
    if is_pipe(rx):
        if known is None:
            return check_recording(item[:4])
        return _judge(reco, known, sample_rate, 1, sample_rate, min_duration)
    try:
        if rx.lower().endswith(MP4_SUFFIXES):
            info = mp4_audio(rx)
            return _judge(reco, info.duration, info.sample_rate, info.channels, sample_rate, min_duration)
        info = sf.info(rx)
    except VoxadaptError as err:
        return RecordingCheck(reco, error=str(err))
    except Exception as err:  # noqa: BLE001 - libsndfile's errors
        missing = "not found" if not Path(rx).exists() else f"unreadable header ({str(err).splitlines()[0]})"
        return RecordingCheck(reco, error=f"'{rx}': {missing}; fix the path in wav.scp or re-encode the file")
    return _judge(reco, info.frames / info.samplerate, info.samplerate, info.channels, sample_rate, min_duration)


def _run(fn, items: list, nj: int, desc: str) -> list[RecordingCheck]:  # noqa: ANN001 - a check function
    chunk = max(1, len(items) // (nj * 20))
    if nj > 1 and len(items) > 1:
        with ProcessPoolExecutor(nj) as pool:
            return list(tqdm(pool.map(fn, items, chunksize=chunk), total=len(items), desc=desc, leave=False, disable=None,
                             mininterval=5))
    return [fn(i) for i in tqdm(items, desc=desc, leave=False, mininterval=5, disable=None)]


def validate_data_dir(path: str | Path, sample_rate: int, min_duration: float = 0.2, audio: AudioCheck = "decode",
                      nj: int = 1, sample: int = 1000, seed: int = 0) -> DataDir:
    """Check tables and audio (`audio`: see the module's doc); return the DataDir with `reco2dur`
    filled in when audio was checked."""
    d = DataDir.load(path)
    recos = sorted(d.wav_scp.items())
    audio = audio_check(audio, d.wav_scp.values())
    if audio == "decode":
        results = _run(check_recording, [(r, rx, sample_rate, min_duration) for r, rx in recos], nj,
                       f"decoding the audio of {d.path}")
    elif audio == "header":
        known = d.reco2dur or {}
        results = _run(check_header, [(r, rx, sample_rate, min_duration, known.get(r)) for r, rx in recos], nj,
                       f"checking the audio headers of {d.path}")
    if audio != "none":
        _raise_faults(d, results)
        d.reco2dur = {r.recording: r.duration for r in results}
    if audio == "header" and sample:
        _check_sample(d, sample_rate, min_duration, nj, sample, seed)
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


def _raise_faults(d: DataDir, results: list[RecordingCheck]) -> None:
    """One error for all faulty recordings: the fault itself when there is one, else a count per kind
    and the first few (each is logged as a warning)."""
    faults = [res for res in results if res.error]
    wav_scp = d.path / "wav.scp"
    messages = [located(wav_scp, d.lines["wav.scp"][res.recording], f"recording '{res.recording}': {res.error}")
                for res in faults]
    if len(faults) == 1:
        raise DataError(messages[0])
    if faults:
        for message in messages:
            log.warning("%s", message)
        kinds = Counter(res.kind for res in faults)
        listed = "; ".join(f"line {d.lines['wav.scp'][res.recording]} '{res.recording}': {res.error.split(';')[0]}"
                           for res in faults[:MAX_LISTED_FAULTS])
        more = f"; ... ({len(faults) - MAX_LISTED_FAULTS} more, each in the log above)" if len(faults) > MAX_LISTED_FAULTS else ""
        raise DataError(located(wav_scp, None, f"{len(faults)} of {len(results)} recordings have audio faults ("
                                + ", ".join(f"{kind}: {n}" for kind, n in kinds.most_common()) + f"): {listed}{more}",
                                f"fix them, or drop them with utils/fix_data_dir.sh --drop-bad-audio true {d.path}"))


def _check_sample(d: DataDir, sample_rate: int, min_duration: float, nj: int, sample: int, seed: int) -> None:
    """Decode a seeded sample in full; its durations must agree with the headers."""
    assert d.reco2dur is not None
    recos = sorted(d.wav_scp)
    picked = sorted(np.random.default_rng(seed).choice(len(recos), min(sample, len(recos)), replace=False))
    items = [(recos[i], d.wav_scp[recos[i]], sample_rate, min_duration) for i in picked]
    results = _run(check_recording, items, nj, f"decoding a sample of {len(items)} recordings of {d.path}")
    _raise_faults(d, results)
    for res in results:
        header = d.reco2dur[res.recording]
        if abs(res.duration - header) > HEADER_TOLERANCE:
            raise DataError(located(d.path / "wav.scp", d.lines["wav.scp"][res.recording],
                                    f"recording '{res.recording}' decodes to {res.duration:.3f} s but its header "
                                    f"(or reco2dur) says {header:.3f} s",
                                    "re-encode the file, or delete reco2dur and validate with data.validation=decode"))
    log.info("%s: a sample of %d recordings decoded in full, all agreeing with their headers", d.path, len(items))


# ------------------------------------------------------------------------------------- fixing


@dataclass
class FixReport:
    """What fixing dropped and what it repaired in place, by reason ('utt2spk: no audio for it' ->
    keys or 'file:line's). Utterances are the distinct ids of utt2spk's well-formed lines."""

    utterances_before: int = 0
    utterances_after: int = 0
    dropped: dict[str, list[str]] = field(default_factory=dict)
    fixed: dict[str, list[str]] = field(default_factory=dict)  # kept, repaired (a byte-order mark, CR LF)
    backup: Path | None = None
    audio_checked: bool = False

    def drop(self, reason: str, what: str) -> None:
        self.dropped.setdefault(reason, []).append(what)

    def fix(self, reason: str, what: str) -> None:
        self.fixed.setdefault(reason, []).append(what)

    @property
    def dropped_share(self) -> float:
        return 1.0 - self.utterances_after / max(1, self.utterances_before)

    def summary(self) -> list[str]:
        """One line per reason with a count and the first few entries."""
        out = []
        for done, entries in (("fixed", self.fixed), ("dropped", self.dropped)):
            for reason, items in entries.items():
                shown = ", ".join(items[:3]) + (f", ... ({len(items) - 3} more)" if len(items) > 3 else "")
                out.append(f"{reason}: {len(items)} {done} ({shown})")
        return out


def _lenient_table(path: Path, fields: int | None, report: FixReport) -> dict[str, str]:
    """Read a table keeping the first of duplicate keys and skipping malformed lines; a byte-order
    mark and Windows line ends are removed (and reported)."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    text = path.read_bytes().decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        report.fix(f"{path.name}: byte-order mark removed", "line 1")
        text = text[1:]
    if "\r" in text:
        report.fix(f"{path.name}: Windows line ends converted", f"{text.count(chr(13))} lines")
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    for lineno, line in enumerate(text.split("\n"), start=1):
        parts = line.strip().split(maxsplit=1)
        if len(parts) < 2 or (fields is not None and len(parts[1].split()) != fields - 1):
            if line.strip():
                report.drop(f"{path.name}: malformed lines", f"line {lineno}")
            continue
        key, value = parts
        if key in out:
            report.drop(f"{path.name}: duplicate keys (the first is kept)", f"'{key}' on line {lineno}")
            continue
        out[key] = value
    return out


def _new_backup_dir(path: Path) -> Path:
    """<dir>/.backup/<n>/ with the next free n: earlier backups are never overwritten."""
    root = path / ".backup"
    root.mkdir(exist_ok=True)
    taken = [int(p.name) for p in root.iterdir() if p.name.isdigit()]
    n = max(taken, default=0) + 1
    while True:
        try:
            (root / str(n)).mkdir()
            return root / str(n)
        except FileExistsError:  # another fixer took it meanwhile
            n += 1


def fix_data_dir(path: str | Path, allow_drop: float = 10.0, drop_bad_audio: bool = False, sample_rate: int = 16000,
                 min_duration: float = 0.2, nj: int = 1) -> FixReport:
    """Sort the tables, drop malformed, duplicate and inconsistent entries, regenerate spk2utt.
    With `drop_bad_audio`, every recording is decoded and those validation refuses (unreadable,
    another sample rate, not mono, too short, silent) are dropped with their utterances.

    Refuses (changing nothing) when more than `allow_drop` percent of the utterances would go:
    that is a mismatch of ids between tables, not a few bad lines. The originals are copied to a
    new `<dir>/.backup/<n>/` first, with the list of what was dropped.
    """
    path = Path(path)
    if not (path / "wav.scp").is_file() or not (path / "utt2spk").is_file():
        raise DataError(located(path, None, "not a Kaldi data dir (needs wav.scp and utt2spk)",
                                "check the path"))
    report = FixReport(audio_checked=drop_bad_audio)
    wav = _lenient_table(path / "wav.scp", None, report)
    utt2spk = _lenient_table(path / "utt2spk", 2, report)
    before = report.utterances_before = len(utt2spk)
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
                report.drop("segments: bad start/end times", f"'{utt}'")
            elif reco not in wav:
                report.drop("segments: recording not in wav.scp", f"'{utt}'")
            else:
                segments[utt] = value
        utts = set(segments) & set(utt2spk)
        for u in sorted(set(segments) - utts):
            report.drop("segments: utterance not in utt2spk", f"'{u}'")
            del segments[u]
        used = {v.split()[0] for v in segments.values()}
    else:
        utts = set(wav) & set(utt2spk)
        used = utts
    for u in sorted(set(utt2spk) - utts):
        report.drop("utt2spk: no audio for it (not in " + ("segments" if segments is not None else "wav.scp") + ")",
                    f"'{u}'")
    for r in sorted(set(wav) - used):
        report.drop("wav.scp: no utterance uses the recording", f"'{r}'")
    if drop_bad_audio:
        checks = _run(check_recording, [(r, wav[r], sample_rate, min_duration) for r in sorted(used)], nj,
                      f"decoding the audio of {path}")
        bad = {res.recording for res in checks if res.error}
        for res in checks:
            if res.error:
                report.drop(f"wav.scp: audio fault ({res.kind})", f"'{res.recording}'")
        lost = {u for u in utts if (segments[u].split()[0] if segments is not None else u) in bad}
        if segments is not None:  # else each recording is its utterance, reported above
            for u in sorted(lost):
                report.drop("segments: its recording has an audio fault", f"'{u}'")
            segments = {u: v for u, v in segments.items() if u not in lost}
        utts, used = utts - lost, used - bad
    report.utterances_after = len(utts)
    if not utts:
        raise DataError(located(path, None, "no usable utterance would be left after fixing",
                                "check that wav.scp, utt2spk and segments use the same ids"))
    if 100 * report.dropped_share > allow_drop:
        worst = max(report.dropped.items(), key=lambda kv: len(kv[1]))[0]
        raise DataError(located(path, None, f"fixing would drop {before - len(utts)} of {before} utterances "
                                f"({100 * report.dropped_share:.0f} %, more than the allowed {allow_drop:g} %; "
                                f"mostly '{worst}'); nothing was changed",
                                "fix the ids in the tables, or pass --allow-drop "
                                f"{int(100 * report.dropped_share) + 1} to accept the loss"))
    backup = report.backup = _new_backup_dir(path)
    for name in ("wav.scp", "utt2spk", "spk2utt", "segments", "reco2dur"):
        if (path / name).is_file():
            shutil.copy2(path / name, backup / name)
    (backup / "dropped.txt").write_text("".join(f"{reason}: {item}\n" for reason, items in report.dropped.items()
                                                for item in items))
    reco2dur = _lenient_table(path / "reco2dur", 2, FixReport(0))
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
