"""Trial lists: Kaldi's 'enroll test target|nontarget' and VoxCeleb's '1|0 path1 path2'."""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from voxadapt.data.kaldi_dir import clean_columns, iter_table, read_lines
from voxadapt.errors import DataError, located
from voxadapt.fileio import atomic_path, gc_paused

KALDI_LABELS = {"target", "nontarget"}


class Trial(NamedTuple):  # a tuple: VoxCeleb lists have over half a million
    enroll: str
    test: str
    target: bool


def voxceleb_path_to_utt(path: str) -> str:
    """'id10270/x6uYqmx31kE/00001.wav' -> 'id10270-x6uYqmx31kE-00001' (our VoxCeleb utt ids)."""
    stem = path.rsplit(".", 1)[0] if path.endswith((".wav", ".m4a", ".flac")) else path
    return stem.replace("/", "-")


def read_enroll_map(path: str | Path, known: Container[str] | None = None) -> dict[str, list[str]]:
    """An enrolment map (spk2utt format, WeSpeaker's enroll.map: 'model utt1 utt2 ...'): model ->
    its utterances, keys unique, any order; with `known`, every utterance must be one of them."""
    path = Path(path)
    out: dict[str, list[str]] = {}
    for line in iter_table(path):
        if line.key in out:
            raise DataError(located(path, line.lineno, f"model '{line.key}' listed twice",
                                    "list each model's utterances on one line"))
        out[line.key] = line.value.split()
        unknown = [u for u in out[line.key] if known is not None and u not in known]
        if unknown:
            raise DataError(located(path, line.lineno, f"utterance '{unknown[0]}' of model '{line.key}' is not in "
                                    "the data dir", "enrol utterances of this data dir only"))
    return out


def read_trials(path: str | Path, known: Iterable[str] | None = None) -> list[Trial]:
    """Read a trial list in Kaldi or VoxCeleb format (detected per line).

    With `known` (the utterance ids that have audio or embeddings), unknown ids are an error
    naming the first few.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(located(path, None, "trial list not found", "check the path"))
    lines = read_lines(path)
    trials = _read_whole_list(lines) or _read_line_by_line(path, lines)
    if known is not None:
        check_trials_known(path, trials, set(known))
    return trials


def _read_whole_list(lines: list[str]) -> list[Trial] | None:
    """The trials of a clean list in one format, column by column (VoxCeleb's lists have over half
    a million lines); None for anything else, which the line-by-line reader parses or names."""
    columns = clean_columns(lines, 3)
    if columns is None:
        return None
    first, second, third = columns
    with gc_paused():
        if set(third) <= KALDI_LABELS:
            columns = zip(first, second, map("target".__eq__, third))
        elif set(first) <= {"0", "1"} and not set(third) & KALDI_LABELS:
            columns = zip(map(voxceleb_path_to_utt, second), map(voxceleb_path_to_utt, third), map("1".__eq__, first))
        else:
            return None
        trials = list(map(tuple.__new__, repeat(Trial), columns))
        if len(set(map(itemgetter(0, 1), trials))) != len(trials) or any(t.enroll == t.test for t in trials):
            return None
    return trials


def _read_line_by_line(path: Path, lines: list[str]) -> list[Trial]:
    trials: list[Trial] = []
    first_seen: dict[tuple[str, str], int] = {}
    for lineno, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise DataError(located(path, lineno, f"expected 3 fields, got {line[:200]!r}",
                                    "use 'enroll test target|nontarget' or VoxCeleb's '1|0 path1 path2'"))
        if parts[2] in KALDI_LABELS:
            trial = Trial(parts[0], parts[1], parts[2] == "target")
        elif parts[0] in ("0", "1"):
            trial = Trial(voxceleb_path_to_utt(parts[1]), voxceleb_path_to_utt(parts[2]), parts[0] == "1")
        elif parts[2] in ("0", "1"):
            raise DataError(located(path, lineno, f"label '{parts[2]}' in the third column: {line[:200]!r}",
                                    "Kaldi lists end with target/nontarget ('enroll test target'); VoxCeleb lists "
                                    "start with 1/0 ('1 path1 path2')"))
        else:
            raise DataError(located(path, lineno, f"label must be target/nontarget (Kaldi) or 1/0 (VoxCeleb): "
                                    f"{line[:200]!r}", "fix the line"))
        # A repeated pair counts twice in EER and DCF; an utterance against itself is a sure target.
        if trial.enroll == trial.test:
            raise DataError(located(path, lineno, f"'{trial.enroll}' is scored against itself",
                                    "delete the line: a trial needs two different utterances"))
        pair = (trial.enroll, trial.test)
        if pair in first_seen:
            raise DataError(located(path, lineno, f"trial '{trial.enroll} {trial.test}' repeats line "
                                    f"{first_seen[pair]}", "delete one of them (e.g. sort -u)"))
        first_seen[pair] = lineno
        trials.append(trial)
    if not trials:
        raise DataError(located(path, None, "trial list is empty", "give a list with at least one trial"))
    return trials


def check_trials_known(path: str | Path, trials: Sequence[Trial], known: set[str]) -> None:
    missing = sorted({u for t in trials for u in (t.enroll, t.test)} - known)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(located(path, None, f"{len(missing)} utterance(s) of the trial list are unknown: {shown}",
                                "score the data dir the list was made for, or fix the list"))


def write_trials(path: str | Path, trials: Iterable[Trial]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for t in trials:
            f.write(f"{t.enroll} {t.test} {'target' if t.target else 'nontarget'}\n")


def make_trials(spk2utt: Mapping[str, Sequence[str]], num_trials: int, target_fraction: float,
                rng: np.random.Generator) -> list[Trial]:
    """Sample distinct utterance pairs (never an utterance with itself), sorted for stable files."""
    speakers = sorted(spk2utt)
    utt2spk = {u: s for s in speakers for u in spk2utt[s]}
    utts = sorted(utt2spk)
    target_pairs = [(a, b) for s in speakers for i, a in enumerate(spk2utt[s]) for b in spk2utt[s][i + 1:]]
    n_target = min(len(target_pairs), int(round(num_trials * target_fraction)))
    n_nontarget = num_trials - n_target
    max_nontarget = (len(utts) ** 2 - sum(len(u) ** 2 for u in spk2utt.values())) // 2
    if n_target < 1 or n_nontarget > max_nontarget:
        raise DataError(f"cannot draw {num_trials} trials ({target_fraction:.0%} target) from "
                        f"{len(speakers)} speakers with {len(utts)} utterances; lower num_trials")
    chosen = [target_pairs[i] for i in rng.choice(len(target_pairs), n_target, replace=False)]
    seen = set()
    nontarget: list[tuple[str, str]] = []
    while len(nontarget) < n_nontarget:
        a, b = (utts[i] for i in rng.integers(0, len(utts), 2))
        pair = (min(a, b), max(a, b))
        if utt2spk[a] != utt2spk[b] and pair not in seen:
            seen.add(pair)
            nontarget.append(pair)
    trials = [Trial(a, b, True) for a, b in chosen] + [Trial(a, b, False) for a, b in nontarget]
    return sorted(trials, key=lambda t: (t.enroll, t.test))
