from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import TINY  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Stages 0-2 of the tiny synthetic corpus, made once per test session (read-only for tests)."""
    from voxadapt.config import load_config
    from voxadapt.corpus.stage import prepare_data_stage
    from voxadapt.data.manifests import manifests_stage

    from voxadapt.augment.resources import augment_stage

    data = tmp_path_factory.mktemp("tiny") / "data"
    cfg = load_config(None, TINY)
    prepare_data_stage(cfg, data, nj=2)
    manifests_stage(cfg, data)
    augment_stage(cfg, data)
    return data
