"""VoxCeleb1/2 from a local download into Kaldi data dirs, with the official cleaned trial lists.

Utterance ids are '<speaker>-<video>-<clip>' (speaker first, as Kaldi needs). VoxCeleb2's AAC
.m4a files are either decoded on the fly by a wav.scp pipe, or converted once to FLAC in a
separate directory; the user's files are never modified. When stage 0 checks headers rather
than decoding (a large tree, data.validation), the pipes' durations come from the MP4 headers.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from voxadapt.config import VoxCelebConfig
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.data.mp4 import mp4_audio
from voxadapt.data.trials import read_trials, write_trials
from voxadapt.data.validate import AudioCheck, audio_check
from voxadapt.errors import DataError, located
from voxadapt.fileio import atomic_path

log = logging.getLogger(__name__)

# Official cleaned lists -> our trial-list suffix (data/vox1/trials_O etc.).
TRIAL_LISTS = {"veri_test2.txt": "O", "list_test_all2.txt": "E", "list_test_hard2.txt": "H"}


@dataclass(frozen=True)
class Clip:
    speaker: str
    video: str
    name: str  # file name without the suffix
    path: str  # absolute

    @property
    def utt(self) -> str:
        return f"{self.speaker}-{self.video}-{self.name}"


def _subdirs(path: str) -> list[os.DirEntry]:
    return sorted((e for e in os.scandir(path) if e.is_dir()), key=lambda e: e.name)


def _scan(root: Path, suffix: str, what: str) -> list[Clip]:
    """<root>/id*/<video>/<clip><suffix>, by directory listing (a million files in seconds: no
    per-file stat or path resolution)."""
    base = root.resolve()
    clips = []
    if base.is_dir():
        for spk in _subdirs(str(base)):
            if not spk.name.startswith("id"):
                continue
            for video in _subdirs(spk.path):
                clips.extend(Clip(spk.name, video.name, name[:-len(suffix)], f"{video.path}/{name}")
                             for name in sorted(os.listdir(video.path)) if name.endswith(suffix))
    if not clips:
        raise DataError(located(root, None, f"no {what} files matching 'id*/*/*{suffix}'",
                                "point the option at the directory that holds VoxCeleb's 'wav/' or 'dev/aac/' tree"))
    return clips


def vox1_data_dir(root: Path, out: Path) -> DataDir:
    clips = _scan(root / "wav", ".wav", "VoxCeleb1 .wav")
    return DataDir(out, {c.utt: c.path for c in clips}, {c.utt: c.speaker for c in clips})


def _convert_one(item: tuple[str, str, str]) -> str | None:
    src, dst, cmd = item
    if Path(dst).is_file():
        return None
    proc = subprocess.run(cmd.format(path=shlex.quote(src)), shell=True, capture_output=True, executable="/bin/bash")
    if proc.returncode != 0 or not proc.stdout:
        return f"{src}: decoding failed ({proc.stderr.decode(errors='replace').strip()[-200:]})"
    import io

    audio, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        sf.write(tmp, audio, sr, format="FLAC")
    return None


def _mp4_duration(path: str) -> float | str:
    try:
        return mp4_audio(path).duration
    except DataError as err:
        return str(err)


def header_durations(clips: list[Clip], nj: int) -> dict[str, float]:
    """Each clip's duration from its MP4 header (in `nj` processes)."""
    paths = [c.path for c in clips]
    with ProcessPoolExecutor(max(1, nj)) as pool:
        found = list(tqdm(pool.map(_mp4_duration, paths, chunksize=2000), total=len(paths),
                          desc="reading MP4 headers", mininterval=10, leave=False, disable=None))
    for d in found:
        if isinstance(d, str):
            raise DataError(f"{d}; re-download the file or remove it from the tree")
    return {c.utt: float(d) for c, d in zip(clips, found)}


def vox2_data_dir(cfg: VoxCelebConfig, out: Path, nj: int, validation: AudioCheck) -> DataDir:
    clips = _scan(Path(cfg.vox2_root) / "dev" / "aac", ".m4a", "VoxCeleb2 .m4a")
    wav, utt2spk = {}, {}
    convert = []
    for c in clips:
        utt2spk[c.utt] = c.speaker
        if cfg.convert_dir:
            dst = Path(cfg.convert_dir).resolve() / c.speaker / c.video / f"{c.name}.flac"
            convert.append((c.path, str(dst), cfg.m4a_decode_cmd))
            wav[c.utt] = str(dst)
        else:
            wav[c.utt] = cfg.m4a_decode_cmd.format(path=shlex.quote(c.path)) + " |"
    if convert:
        log.info("decoding %d VoxCeleb2 files to FLAC under %s (%d jobs)", len(convert), cfg.convert_dir, nj)
        with ProcessPoolExecutor(max(1, nj)) as pool:
            errors = [e for e in tqdm(pool.map(_convert_one, convert, chunksize=64), total=len(convert),
                                      desc="m4a -> flac", mininterval=10, disable=None) if e]
        if errors:
            raise DataError(f"{errors[0]} ({len(errors)} file(s) failed); check data.voxceleb.m4a_decode_cmd "
                            "(is ffmpeg installed? apt-get install ffmpeg)")
    if not convert and audio_check(validation, wav.values()) == "header":
        return DataDir(out, wav, utt2spk, reco2dur=header_durations(clips, nj))
    return DataDir(out, wav, utt2spk)


def prepare_voxceleb(cfg: VoxCelebConfig, vox2_dir: Path, vox1_dir: Path, nj: int, validation: AudioCheck) -> None:
    """VoxCeleb2 dev (training) into `vox2_dir`, VoxCeleb1 and its cleaned trial lists into `vox1_dir`."""
    if not cfg.vox1_root or not cfg.vox2_root:
        raise DataError("VoxCeleb needs both roots: run.sh --voxceleb1_root DIR --voxceleb2_root DIR "
                        "(or data.voxceleb.vox1_root / vox2_root in the config)")
    vox1 = vox1_data_dir(Path(cfg.vox1_root), vox1_dir)
    trials_dir = Path(cfg.trials_dir or cfg.vox1_root)
    found = {name: suffix for name, suffix in TRIAL_LISTS.items() if (trials_dir / name).is_file()}
    if not found:
        raise DataError(located(trials_dir, None, "none of VoxCeleb1's cleaned trial lists "
                                f"({', '.join(TRIAL_LISTS)}) is here",
                                "download them from the VoxCeleb site and pass --vox1_trials DIR"))
    vox2 = vox2_data_dir(cfg, vox2_dir, nj, validation)
    vox1.write()
    for name, suffix in found.items():
        write_trials(vox1.path / f"trials_{suffix}", read_trials(trials_dir / name, known=vox1.utt2spk))
    vox2.write()
    missing = sorted(set(TRIAL_LISTS) - set(found))
    if missing:
        log.warning("%s: trial lists not found, skipped: %s", trials_dir, ", ".join(missing))
