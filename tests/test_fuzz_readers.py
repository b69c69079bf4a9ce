"""Fuzzing the readers of user files: whatever the bytes, the answer is the file parsed or a
VoxadaptError (one line, naming the file) - never another exception, which users see as a traceback.

Inputs are random bytes, mutations of valid files (byte flips, insertions, truncation), and the
faults editors and other systems add: a UTF-8 byte-order mark, CR LF line ends, NUL bytes, a
megabyte-long line, Latin-1 text. Seeded, so a failure reproduces."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import make_data_dir

from voxadapt.errors import VoxadaptError

CASES_PER_READER = 150

VALID = {
    "config": b"base: mhfa_tiny.yaml\nname: fuzz\nloader:\n  batch_size: 8\ntrain:\n  phases:\n"
              b"    - {name: main, epochs: 1, lr: 0.001}\n",
    "utt2spk": b"a-000 a\na-001 a\nb-000 b\n",
    "trials": b"a-000 a-001 target\na-000 b-000 nontarget\n1 id1/v/1.wav id2/v/2.wav\n",
    "manifest": b'{"format": "voxadapt-package-1", "name": "x", "sample_rate": 16000, "methods": ["cosine"],'
                b' "default_method": "cosine", "asnorm_top_n": 10, "thresholds": {}, "base_model": ""}\n',
    "calibration": b'{"cosine": {"weights": [1.0], "bias": 0.5, "quality": false}}\n',
}


def mutations(valid: bytes, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = [b"", b"\xef\xbb\xbf" + valid, valid.replace(b"\n", b"\r\n"), valid + b"x" * (1 << 20) + b"\n",
           valid.replace(b"\n", b"\x00\n", 1), valid.decode(errors="replace").encode("utf-16"), "é ü\n".encode("latin-1") + valid,
           valid[: len(valid) // 2], b"\n\n\n", b" " * 10 + valid]
    while len(out) < CASES_PER_READER:
        kind = rng.integers(4)
        if kind == 0:
            out.append(rng.integers(0, 256, rng.integers(1, 200), dtype=np.uint8).tobytes())
        else:
            b = bytearray(valid)
            for _ in range(rng.integers(1, 6)):
                pos = int(rng.integers(0, len(b) + 1))
                if kind == 1 and b:
                    b[min(pos, len(b) - 1)] = int(rng.integers(0, 256))
                elif kind == 2:
                    b[pos:pos] = bytes([int(rng.choice([9, 10, 13, 32, 34, 58, 91, 123, 0xEF, 0xFF]))])
                else:
                    del b[pos:pos + int(rng.integers(1, 8))]
            out.append(bytes(b))
    return out


def read_config(path: Path) -> None:
    from voxadapt.config import load_config

    (path.parent / "mhfa_tiny.yaml").write_bytes((Path(__file__).parent.parent / "conf" / "mhfa_tiny.yaml").read_bytes())
    load_config(path)


def read_utt2spk(path: Path) -> None:
    from voxadapt.data.kaldi_dir import DataDir

    d = make_data_dir(path.parent / "d", {"a": 2, "b": 1})
    (d / "spk2utt").unlink()
    (d / "utt2spk").write_bytes(path.read_bytes())
    DataDir.load(d)


def read_trials(path: Path) -> None:
    from voxadapt.data.trials import read_trials as read

    read(path)


def read_manifest(path: Path) -> None:
    from voxadapt.layout import PackageLayout
    from voxadapt.package import read_manifest as read

    (path.parent / "pkg").mkdir(exist_ok=True)
    PackageLayout(path.parent / "pkg").manifest.write_bytes(path.read_bytes())
    read(path.parent / "pkg")


def read_calibration(path: Path) -> None:
    from voxadapt.backend.calibration import load_calibrations

    load_calibrations(path)


READERS: dict[str, Callable[[Path], None]] = {
    "config": read_config, "utt2spk": read_utt2spk, "trials": read_trials, "manifest": read_manifest,
    "calibration": read_calibration,
}


@pytest.mark.parametrize("name", sorted(READERS))
def test_reader_never_raises_anything_but_a_user_error(tmp_path, name):
    reader, valid = READERS[name], VALID[name]
    reader_path = tmp_path / "input"
    reader_path.write_bytes(valid)
    reader(reader_path)  # the valid file itself is read
    for i, data in enumerate(mutations(valid, seed=sum(map(ord, name)))):
        case = tmp_path / f"case{i}"
        case.mkdir()
        path = case / "input"
        path.write_bytes(data)
        try:
            reader(path)
        except VoxadaptError as err:
            message = str(err)
            assert "\n" not in message and len(message) < 2000, (name, i, data[:80], message[:300])
        except Exception as err:  # noqa: BLE001 - exactly what must not happen
            pytest.fail(f"{name} case {i} ({data[:80]!r}): {type(err).__name__}: {err}")


def test_xvector_scp_fuzz(tmp_path):
    import kaldiio

    from voxadapt.backend.scoring import Embeddings

    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'x.ark'},{tmp_path / 'x.scp'}") as w:
        for i in range(3):
            w(f"u{i}", np.full(4, i, dtype=np.float32))
    valid_scp, valid_ark = (tmp_path / "x.scp").read_bytes(), (tmp_path / "x.ark").read_bytes()
    for i, (scp, ark) in enumerate([(m, valid_ark) for m in mutations(valid_scp, 1)[:60]]
                                   + [(valid_scp, m) for m in mutations(valid_ark, 2)[:60]]):
        (tmp_path / "x.scp").write_bytes(scp)
        (tmp_path / "x.ark").write_bytes(ark)
        try:
            Embeddings.from_scp(tmp_path / "x.scp")
        except VoxadaptError as err:
            assert "\n" not in str(err), (i, str(err)[:300])
        except Exception as err:  # noqa: BLE001
            pytest.fail(f"case {i} ({scp[:60]!r}, {ark[:60]!r}): {type(err).__name__}: {err}")
