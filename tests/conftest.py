from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import PIPELINE, TINY, run_stages, write_config  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Stages 0-2 of the tiny synthetic corpus, made once per test session (read-only for tests)."""
    from voxadapt.config import load_config
    from voxadapt.layout import DataLayout
    from voxadapt.stages import augment, manifests
    from voxadapt.stages import data as data_stage

    data = tmp_path_factory.mktemp("tiny") / "data"
    cfg = load_config(None, TINY)
    layout = DataLayout(data)
    data_stage.run(cfg, layout, nj=2)
    manifests.run(cfg, layout)
    augment.run(cfg, layout)
    return data


@pytest.fixture(scope="session")
def micro_pipeline(tmp_path_factory) -> Path:
    """Stages 0-8 of the micro model on the tiny corpus, uninterrupted (read-only for tests)."""
    root = tmp_path_factory.mktemp("pipeline")
    write_config(root / "cfg.yaml", PIPELINE)
    proc = run_stages(root, 0, 8)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root


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
