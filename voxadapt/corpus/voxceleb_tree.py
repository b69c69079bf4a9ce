"""A VoxCeleb-shaped tree at a fraction of VoxCeleb's real counts, for rehearsing the recipe's
bookkeeping at scale (benchmarks/voxceleb_scale.py) and for tests.

The layout, file names, speaker/video/clip counts and the three cleaned trial lists are those of
VoxCeleb1 and VoxCeleb2 dev; the audio is not: every file is a hard link to one of a small pool
of short generated recordings (VoxCeleb2's as real AAC, made with ffmpeg), so a full-size tree
costs inodes, not disk, and what a run measures is the recipe's own work per file.
"""

from __future__ import annotations

import os
import shutil
import string
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from voxadapt.errors import DataError


@dataclass(frozen=True)
class PartCounts:
    speakers: int
    videos: int
    utterances: int


# VoxCeleb1 (dev + test) and VoxCeleb2 dev as published; trials of the cleaned lists.
VOX1 = PartCounts(1_251, 22_496, 153_516)
VOX2_DEV = PartCounts(5_994, 145_569, 1_092_009)
TRIALS = {"veri_test2.txt": 37_611, "list_test_all2.txt": 579_818, "list_test_hard2.txt": 550_894}
VOX1_O_SPEAKERS = 40  # the original test list uses VoxCeleb1's 40 test speakers only

_VIDEO_CHARS = np.array(list(string.ascii_letters + string.digits + "-_"))


@dataclass(frozen=True)
class Tree:
    vox1: Path  # wav/idXXXXX/<video>/<clip>.wav and the trial lists
    vox2: Path  # dev/aac/idXXXXX/<video>/<clip>.m4a
    vox1_utts: int
    vox2_utts: int
    trials: dict[str, int]


def scaled(counts: PartCounts, fraction: float) -> PartCounts:
    spk = max(2, round(counts.speakers * fraction))
    return PartCounts(spk, max(spk, round(counts.videos * fraction)), max(2 * spk, round(counts.utterances * fraction)))


def _split(total: int, parts: int, rng: np.random.Generator, minimum: int) -> np.ndarray:
    """`total` items over `parts` groups, each at least `minimum`, the rest at random."""
    counts = np.full(parts, minimum, dtype=np.int64)
    counts += rng.multinomial(total - minimum * parts, np.full(parts, 1.0 / parts))
    return counts


def _layout(counts: PartCounts, first_id: int, rng: np.random.Generator) -> list[tuple[str, str, int]]:
    """(speaker, video, clips) triples with the right totals; every speaker has >= 2 clips."""
    videos = _split(counts.videos, counts.speakers, rng, 1)
    spk_of = np.repeat(np.arange(counts.speakers), videos)
    names = ["".join(chars) for chars in rng.choice(_VIDEO_CHARS, (len(spk_of), 11))]
    clips = _split(counts.utterances, len(spk_of), rng, 1)
    first_row = np.concatenate([[0], np.cumsum(videos)[:-1]])
    for s in np.flatnonzero(np.bincount(spk_of, weights=clips, minlength=counts.speakers) < 2):
        donor = int(np.argmax(clips))  # a speaker with a single clip takes one from the largest video
        clips[donor] -= 1
        clips[first_row[s]] += 1
    return [(f"id{first_id + s:05d}", v, int(n)) for s, v, n in zip(spk_of, names, clips)]


def make_pool(out: Path, n: int, ext: str, seed: int, ffmpeg: str = "ffmpeg", sr: int = 16000,
              seconds: tuple[float, float] = (2.0, 4.0)) -> list[Path]:
    """`n` short voiced-sounding recordings (harmonics with a moving pitch, plus noise); '.m4a' ones
    are real AAC made by the `ffmpeg` executable."""
    out.mkdir(parents=True, exist_ok=True)
    if ext == ".m4a" and not shutil.which(ffmpeg):
        raise DataError(f"{ffmpeg}: not found; the VoxCeleb2 pool is real AAC: apt-get install ffmpeg")
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = out / f"pool{i:04d}{ext}"
        paths.append(path)
        if path.is_file():
            continue
        t = np.arange(int(rng.uniform(*seconds) * sr)) / sr
        f0 = rng.uniform(90, 250) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        x = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
        x = 0.1 * x / np.abs(x).max() + 0.003 * rng.standard_normal(len(t))
        wav = path.with_suffix(".tmp.wav")
        sf.write(wav, x.astype(np.float32), sr, subtype="PCM_16")
        if ext == ".m4a":
            subprocess.run([ffmpeg, "-nostdin", "-v", "error", "-y", "-i", str(wav), "-c:a", "aac", "-b:a", "48k",
                            str(path)], check=True)
            wav.unlink()
        else:
            wav.rename(path)
    return paths


def _populate(root: Path, layout: list[tuple[str, str, int]], pool: list[Path], ext: str) -> list[str]:
    """Hard-link the pool into root/<spk>/<video>/<clip><ext>; returns 'spk/video/clip<ext>' names."""
    names = []
    k = 0
    for spk, video, clips in layout:
        d = root / spk / video
        d.mkdir(parents=True, exist_ok=True)
        for c in range(1, clips + 1):
            name = f"{c:05d}{ext}"
            dst = d / name
            if not dst.exists():
                os.link(pool[k % len(pool)], dst)
            k += 1
            names.append(f"{spk}/{video}/{name}")
    return names


def _trial_list(path: Path, names: np.ndarray, speakers: np.ndarray, n: int, rng: np.random.Generator) -> None:
    """`n` distinct trials, half target, in VoxCeleb's '1|0 enroll test' format."""
    order = np.argsort(speakers, kind="stable")
    starts = np.searchsorted(speakers[order], np.unique(speakers))
    bounds = np.append(starts, len(order))
    lines: set[str] = set()
    with open(path, "w") as f:
        while len(lines) < n:
            m = n - len(lines)
            a = rng.integers(0, len(names), m)
            target = rng.random(m) < 0.5
            s = np.searchsorted(np.unique(speakers), speakers[a])
            same = order[bounds[s] + (rng.random(m) * (bounds[s + 1] - bounds[s])).astype(np.int64)]
            b = np.where(target, same, rng.integers(0, len(names), m))
            for i, j, t in zip(a, b, target):
                if i == j or (speakers[i] == speakers[j]) != t:
                    continue
                line = f"{int(t)} {names[i]} {names[j]}\n"
                if line not in lines and len(lines) < n:
                    lines.add(line)
                    f.write(line)


def build_tree(out: Path, fraction: float, seed: int = 0, pool_size: int = 200, ffmpeg: str = "ffmpeg") -> Tree:
    """VoxCeleb1 under out/vox1, VoxCeleb2 dev under out/vox2, at `fraction` of the real counts."""
    rng = np.random.default_rng(seed)
    vox1, vox2 = out / "vox1", out / "vox2"
    # VoxCeleb1's clips are short (0.5-1 s): stage 5 runs a model over every one of them.
    pool1 = make_pool(out / "pool", pool_size, ".wav", seed, seconds=(0.5, 1.0))
    pool2 = make_pool(out / "pool", pool_size, ".m4a", seed + 1, ffmpeg)
    names1 = _populate(vox1 / "wav", _layout(scaled(VOX1, fraction), 10001, rng), pool1, ".wav")
    names2 = _populate(vox2 / "dev" / "aac", _layout(scaled(VOX2_DEV, fraction), 1, rng), pool2, ".m4a")
    arr = np.array(names1)
    spk = np.array([int(n[2:7]) for n in names1])
    trials = {}
    for name, count in TRIALS.items():
        n = max(10, round(count * fraction))
        pick = spk < 10001 + max(2, round(VOX1_O_SPEAKERS * fraction)) if name == "veri_test2.txt" else spk > 0
        _trial_list(vox1 / name, arr[pick], spk[pick], n, rng)
        trials[name] = n
    return Tree(vox1, vox2, len(names1), len(names2), trials)
