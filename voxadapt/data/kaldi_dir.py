"""Kaldi data directories: wav.scp, utt2spk, spk2utt, optional segments and reco2dur.

Parsing is strict (one error naming file and line); `DataDir` holds the parsed tables.
Files are written sorted in C order, as Kaldi's tools expect.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from voxadapt.errors import DataError, located
from voxadapt.fileio import atomic_path, content_digest


@dataclass(frozen=True)
class Segment:
    recording: str
    start: float
    end: float  # -1: to the end of the recording (Kaldi's convention)


class TableLine(NamedTuple):  # a tuple: millions are made for large tables
    lineno: int
    key: str
    value: str


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text table, after checking for the invisible faults editors add."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(located(path, None, "file not found")) from None
    except IsADirectoryError:
        raise DataError(located(path, None, "is a directory, not a file", "give the file")) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(located(path, line, "not UTF-8 text", "re-encode the file as UTF-8")) from None
    check_text_form(path, text)
    lines = text.split("\n")  # not splitlines(): it also splits at form feeds and U+2028
    if lines[-1] == "":
        lines.pop()  # the final newline
    return lines


def iter_table(path: Path, lines: list[str] | None = None) -> Iterator[TableLine]:
    """Lines 'key value...' of a Kaldi table file (`lines`: its lines, already read); blank or
    one-field lines are errors."""
    for lineno, line in enumerate(read_lines(path) if lines is None else lines, start=1):
        key, _, value = line.partition(" ")
        if value and not value[0].isspace() and not value[-1].isspace() and key.split() == [key]:
            yield TableLine(lineno, key, value)  # the common, clean line: no further checks needed
            continue
        if not line.strip():
            raise DataError(located(path, lineno, "empty line", "delete it"))
        if line != line.strip():
            raise DataError(located(path, lineno, "leading or trailing whitespace", "strip the line"))
        parts = line.split(maxsplit=1)
        if len(parts) < 2:
            raise DataError(located(path, lineno, f"expected '<key> <value>', got {line[:200]!r}",
                                    "fix or delete the line"))
        yield TableLine(lineno, parts[0], parts[1])


def clean_columns(lines: list[str], fields: int) -> list[list[str]] | None:
    """The columns of a table whose every line is `fields` fields separated by single spaces (as
    Kaldi's tools write them), split in one step; None for anything else, which the caller parses
    line by line to name what is wrong."""
    text = "\n".join(lines)
    one_line = r"\S+" + r" \S+" * (fields - 1)
    if not lines or not re.fullmatch(f"{one_line}(?:\n{one_line})*", text):
        return None
    tokens = text.split()
    return [tokens[i::fields] for i in range(fields)]


def read_key_values(path: Path) -> tuple[list[str], list[str]]:
    """Keys and values of a Kaldi table file (line i + 1 holds entry i)."""
    lines = read_lines(path)
    columns = clean_columns(lines, 2)
    if columns:
        return columns[0], columns[1]
    table = list(iter_table(path, lines))
    return [line.key for line in table], [line.value for line in table]


def check_text_form(path: Path, text: str) -> None:
    """Byte-order marks and Windows line ends break keys silently ('\ufeffspk1' is a new speaker);
    name them before any parsing does something stranger."""
    if text.startswith("\ufeff"):
        raise DataError(located(path, 1, "starts with a UTF-8 byte-order mark (an editor's, invisible)",
                                f"remove it: sed -i '1s/^\\xEF\\xBB\\xBF//' {shlex.quote(str(path))}"))
    if "\r" in text:
        line = text[: text.index("\r")].count("\n") + 1
        raise DataError(located(path, line, "Windows line ending (CR LF)",
                                f"convert it: sed -i 's/\\r$//' {shlex.quote(str(path))}  (or dos2unix)"))


def check_sorted_unique(path: Path, lines: list[TableLine]) -> None:
    for prev, cur in zip(lines, lines[1:]):
        if cur.key == prev.key:
            raise DataError(located(path, cur.lineno, f"duplicate key '{cur.key}' (also on line {prev.lineno})",
                                    "run utils/fix_data_dir.sh to drop duplicates"))
        if cur.key < prev.key:
            raise DataError(located(path, cur.lineno, f"not sorted: '{cur.key}' after '{prev.key}'",
                                    "sort it with LC_ALL=C sort, or run utils/fix_data_dir.sh"))


def read_table(path: Path, check_order: bool = True) -> dict[str, TableLine]:
    lines = list(iter_table(path))
    if check_order:
        check_sorted_unique(path, lines)
    return {line.key: line for line in lines}


def _parse_segment(path: Path, line: TableLine) -> Segment:
    parts = line.value.split()
    if len(parts) != 3:
        raise DataError(located(path, line.lineno, "expected '<utt> <recording> <start> <end>'", "fix the line"))
    try:
        start, end = float(parts[1]), float(parts[2])
    except ValueError:
        raise DataError(located(path, line.lineno, f"start/end are not numbers: {line.value!r}", "fix the line")) from None
    if start < 0 or (end != -1 and end <= start):
        raise DataError(located(path, line.lineno, f"bad segment times {start} {end}", "need 0 <= start < end"))
    return Segment(parts[0], start, end)


@dataclass
class DataDir:
    """A parsed Kaldi data dir. Keys of `wav_scp` are recording ids; of `utt2spk`, utterance ids."""

    path: Path
    wav_scp: dict[str, str]
    utt2spk: dict[str, str]
    segments: dict[str, Segment] | None = None
    reco2dur: dict[str, float] | None = None
    lines: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)  # file -> key -> line

    @classmethod
    def load(cls, path: str | Path) -> DataDir:
        """Read and cross-check a data dir; the first problem is raised as a DataError."""
        path = Path(path)
        if not path.is_dir():
            raise DataError(located(path, None, "data dir not found", "give an existing Kaldi data dir"))
        for name in ("wav.scp", "utt2spk"):
            if not (path / name).is_file():
                raise DataError(located(path / name, None, "missing", f"a Kaldi data dir needs {name}"))
        wav = read_table(path / "wav.scp")
        if not wav:
            raise DataError(located(path / "wav.scp", None, "empty", "the data dir has no recordings"))
        utt = read_table(path / "utt2spk")
        for line in utt.values():
            if len(line.value.split()) != 1:
                raise DataError(located(path / "utt2spk", line.lineno, "expected '<utt> <speaker>'", "fix the line"))
        lines = {"wav.scp": {k: v.lineno for k, v in wav.items()}, "utt2spk": {k: v.lineno for k, v in utt.items()}}
        segments = None
        if (path / "segments").is_file():
            seg = read_table(path / "segments")
            segments = {k: _parse_segment(path / "segments", v) for k, v in seg.items()}
            lines["segments"] = {k: v.lineno for k, v in seg.items()}
        reco2dur = None
        if (path / "reco2dur").is_file():
            table = read_table(path / "reco2dur")
            try:
                reco2dur = {k: float(v.value) for k, v in table.items()}
            except ValueError:
                raise DataError(located(path / "reco2dur", None, "durations must be numbers",
                                        "delete reco2dur; it is recomputed by validation")) from None
        d = cls(path, {k: v.value for k, v in wav.items()}, {k: v.value for k, v in utt.items()},
                segments, reco2dur, lines)
        d._check_consistency()
        return d

    def _line(self, name: str, key: str) -> int | None:
        return self.lines.get(name, {}).get(key)

    def _check_consistency(self) -> None:
        p = self.path
        fix = "run utils/fix_data_dir.sh to drop the inconsistent entries"
        utts = self.utterance_ids
        if self.segments is not None:
            if set(self.segments) != set(self.utt2spk):
                key = sorted(set(self.segments) ^ set(self.utt2spk))[0]
                where = "segments" if key in self.segments else "utt2spk"
                other = "utt2spk" if where == "segments" else "segments"
                raise DataError(located(p / where, self._line(where, key), f"utterance '{key}' is not in {other}", fix))
            for utt, seg in self.segments.items():
                if seg.recording not in self.wav_scp:
                    raise DataError(located(p / "segments", self._line("segments", utt),
                                            f"recording '{seg.recording}' is not in wav.scp", fix))
        elif set(self.wav_scp) != set(utts):
            key = sorted(set(self.wav_scp) ^ set(utts))[0]
            where = "wav.scp" if key in self.wav_scp else "utt2spk"
            other = "utt2spk" if where == "wav.scp" else "wav.scp"
            raise DataError(located(p / where, self._line(where, key), f"'{key}' is not in {other}", fix))
        # Kaldi requires that sorting by speaker keeps utterance order (speaker id as utt prefix).
        by_spk = sorted(utts, key=lambda u: (self.utt2spk[u], u))
        if by_spk != utts:
            bad = next(a for a, b in zip(by_spk, utts) if a != b)
            raise DataError(located(p / "utt2spk", self._line("utt2spk", bad),
                                    f"utterance order differs when sorted by speaker (at '{bad}')",
                                    "make speaker ids prefixes of utterance ids"))
        spk2utt_path = p / "spk2utt"
        if spk2utt_path.is_file():
            table = read_table(spk2utt_path)
            expected = self.spk2utt
            for spk, line in table.items():
                if expected.get(spk) != line.value.split():
                    raise DataError(located(spk2utt_path, line.lineno, f"speaker '{spk}' disagrees with utt2spk",
                                            "regenerate it: utils/fix_data_dir.sh"))
            if len(table) != len(expected):
                missing = sorted(set(expected) - set(table))[0]
                raise DataError(located(spk2utt_path, None, f"speaker '{missing}' of utt2spk is missing",
                                        "regenerate it: utils/fix_data_dir.sh"))
        if self.reco2dur is not None and set(self.reco2dur) != set(self.wav_scp):
            raise DataError(located(p / "reco2dur", None, "recordings differ from wav.scp",
                                    "delete reco2dur; validation recomputes it"))

    @property
    def utterance_ids(self) -> list[str]:
        return sorted(self.utt2spk)

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for utt in self.utterance_ids:
            out.setdefault(self.utt2spk[utt], []).append(utt)
        return out

    def recording_of(self, utt: str) -> str:
        return self.segments[utt].recording if self.segments is not None else utt

    def utt2dur(self) -> dict[str, float]:
        """Each utterance's duration: its recording's, or its segment's."""
        if self.reco2dur is None:
            raise DataError(located(self.path / "reco2dur", None, "missing", "validate the data dir first (stage 0 writes it)"))
        if self.segments is None:
            return {utt: self.reco2dur[utt] for utt in self.utterance_ids}
        return {utt: (self.reco2dur[seg.recording] if seg.end == -1 else seg.end) - seg.start
                for utt, seg in ((u, self.segments[u]) for u in self.utterance_ids)}

    def write(self, path: str | Path | None = None) -> None:
        """Write every table (sorted, atomically) to `path` (default: where it was read)."""
        out = Path(path) if path else self.path
        out.mkdir(parents=True, exist_ok=True)
        write_table(out / "wav.scp", self.wav_scp.items())
        write_table(out / "utt2spk", self.utt2spk.items())
        write_table(out / "spk2utt", ((s, " ".join(u)) for s, u in self.spk2utt.items()))
        if self.segments is not None:
            write_table(out / "segments", ((u, f"{s.recording} {_seconds(s.start)} {_seconds(s.end)}")
                                           for u, s in self.segments.items()))
        if self.reco2dur is not None:
            write_table(out / "reco2dur", ((r, f"{d:.4f}") for r, d in self.reco2dur.items()))
            # Kaldi's utt2dur too (what `voxadapt score --utt2dur` and Kaldi's tools read); for a
            # dir without segments it repeats reco2dur.
            write_table(out / "utt2dur", ((u, f"{d:.4f}") for u, d in self.utt2dur().items()))


def _seconds(t: float) -> str:
    """A segment time as written: to the microsecond, without trailing zeros (1 ms would move a
    16 kHz boundary by up to 8 samples)."""
    return f"{t:.6f}".rstrip("0").rstrip(".") if t != -1 else "-1"


def tables_digest(set_dir: Path) -> str:
    """A hash of a data dir's tables: outputs derived from them record it to notice edits."""
    return content_digest(name.encode() + (set_dir / name).read_bytes()
                          for name in ("wav.scp", "utt2spk", "segments", "reco2dur") if (set_dir / name).is_file())


def write_table(path: Path, items: Iterable[tuple[str, str]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for key, value in sorted(items):
            f.write(f"{key} {value}\n")
