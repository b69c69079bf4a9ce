"""A minimal ctypes binding to the espeak-ng library bundled by PyPI's `espeakng-loader`.

Voices are espeak-ng 'variant' files written into a private copy of the data directory (the
bundled files are symlinked, only `voices/!v/` is ours), so each pseudo-speaker gets its own
formants, pitch, voice quality and rate without touching the installed package.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from voxadapt.errors import VoxadaptError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4}
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def make_data_root(root: Path, variants: Mapping[str, str]) -> Path:
    """Create `root/espeak-ng-data` mirroring the bundled data plus our variant files."""
    import espeakng_loader

    src = Path(espeakng_loader.get_data_path())
    data = root / "espeak-ng-data"
    (data / "voices" / "!v").mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        if entry.name != "voices" and not (data / entry.name).exists():
            (data / entry.name).symlink_to(entry)
    for entry in (src / "voices").iterdir():
        if entry.name != "!v" and not (data / "voices" / entry.name).exists():
            (data / "voices" / entry.name).symlink_to(entry)
    for name, text in variants.items():
        (data / "voices" / "!v" / name).write_text(text)
    return root


class Espeak:
    """One synthesiser per process (the library keeps global state)."""

    def __init__(self, data_root: Path):
        import espeakng_loader

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                           ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.sample_rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_root).encode(), 0)
        if self.sample_rate <= 0:
            raise VoxadaptError(f"{data_root}: espeak-ng failed to initialise; reinstall espeakng-loader")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # keep a reference: the library calls it later
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n, _events) -> int:  # noqa: ANN001 - ctypes signature
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def synthesize(self, text: str, voice: str, rate: int, pitch: int = 50, pitch_range: int = 50,
                   seed: int = 0) -> np.ndarray:
        """int16 samples at `self.sample_rate`; `voice` is e.g. 'en-us+myvariant'.

        espeak-ng carries some synthesis state from one call to the next (the noise generator,
        'flutter' and 'roughness' phases, pitch and Klatt source state). For output that depends
        only on the arguments, the noise is reseeded and a short primer with the same voice and
        settings is rendered and discarded first; voices must not use flutter or roughness.
        """
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise VoxadaptError(f"espeak-ng has no voice '{voice}'")
        for name, value in (("rate", rate), ("pitch", pitch), ("range", pitch_range)):
            self._lib.espeak_SetParameter(_PARAM[name], int(value), 0)
        for part in ("a.", text):
            self._lib.espeak_ng_SetRandSeed(seed)
            self._chunks = []
            data = part.encode()
            status = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, 0, None, None)
            if status != 0:
                raise VoxadaptError(f"espeak-ng failed on {part!r} (status {status})")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
