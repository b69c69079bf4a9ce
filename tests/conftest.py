from __future__ import annotations

import fcntl
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import PIPELINE, TINY, run_stages, write_config  # noqa: E402


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A directory `build` fills once per test session, shared by pytest-xdist's workers
    (tests/run.sh runs the suite in several): the first worker to need it builds it under a lock,
    the others wait and read it. A build that failed is tried again by the next test that needs it."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's directory, above each worker's own
    path = base / name
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (base / f"{name}.built").exists():
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            build(path)
            (base / f"{name}.built").touch()
    return path


def _tiny_data(root: Path) -> None:
    from voxadapt.config import load_config
    from voxadapt.data.split import split_data_dir
    from voxadapt.layout import DataLayout
    from voxadapt.stages import augment, manifests
    from voxadapt.stages import data as data_stage

    cfg = load_config(None, TINY)
    layout = DataLayout(root / "data")
    data_stage.run(cfg, layout, nj=2)
    manifests.run(cfg, layout)
    augment.run(cfg, layout)
    for set_dir in sorted(p.parent for p in layout.root.glob("*/utt2spk")):
        split_data_dir(set_dir, 2)  # stage 5's default split, made here: tests in parallel would race to make it


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Stages 0-2 of the tiny synthetic corpus, made once per test session (read-only for tests)."""
    return built_once(tmp_path_factory, "tiny", _tiny_data) / "data"


def _micro_pipeline(root: Path) -> None:
    write_config(root / "cfg.yaml", PIPELINE)
    proc = run_stages(root, 0, 8)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="session")
def micro_pipeline(tmp_path_factory) -> Path:
    """Stages 0-8 of the micro model on the tiny corpus, uninterrupted (read-only for tests)."""
    return built_once(tmp_path_factory, "pipeline", _micro_pipeline)


@pytest.fixture(scope="session")
def package(micro_pipeline) -> Path:
    """The micro pipeline's packaged model (read-only for tests)."""
    return micro_pipeline / "exp" / "mhfa_tiny" / "package"


@pytest.fixture(scope="session")
def wavs(micro_pipeline) -> list[str]:
    """Three test utterances of the micro pipeline's corpus."""
    from voxadapt.data.kaldi_dir import DataDir

    d = DataDir.load(micro_pipeline / "data" / "test")
    return [d.wav_scp[u] for u in d.utterance_ids[:3]]
