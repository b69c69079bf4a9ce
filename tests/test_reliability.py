"""Every stage survives SIGKILL: killed mid-way, re-run, it ends with the same outputs as an
uninterrupted run. Plus faults outside the data: unwritable outputs, writes that fail (disk full).

One uninterrupted micro pipeline (stages 0-8, deterministic CPU training) is the reference.
"""

from __future__ import annotations

import gzip
import json
import shutil
import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest
from helpers import (
    PIPELINE,
    ROOT,
    assert_clean_error,
    kill_group,
    run_stages,
    run_step,
    set_args,
    start_killable,
    venv_env,
)
from safetensors.torch import load_file

pytestmark = pytest.mark.slow
NAME = "mhfa_tiny"


@pytest.fixture
def reference(micro_pipeline):
    return micro_pipeline


def copy_of(reference: Path, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(reference, root, symlinks=True)
    return root


REDO = {  # what a stage writes: removed from the copy before the stage runs again
    2: ["data/manifests/augment", "data/augment", "data/.done/stage2_augment.json"],
    4: [f"exp/{NAME}/lm", f"exp/{NAME}/model"],
    5: [f"exp/{NAME}/embeddings"],
    6: [f"exp/{NAME}/backend", f"exp/{NAME}/.done/stage6_backend.json"],
    7: [f"exp/{NAME}/scores", f"exp/{NAME}/results.json", f"exp/{NAME}/RESULTS.md", f"exp/{NAME}/.done/stage7_score.json"],
    8: [f"exp/{NAME}/package"],
}
KILL_WHEN = {  # a point in the middle of each stage's work
    2: lambda r: len(list((r / "data/augment/noise").glob("*.wav"))) >= 3,
    4: lambda r: any((r / f"exp/{NAME}/lm/checkpoints").glob("ckpt-*.pt")),
    5: lambda r: (r / f"exp/{NAME}/embeddings/train/xvector.1.ark").exists(),
    6: lambda r: (r / f"exp/{NAME}/backend").exists() or any((r / f"exp/{NAME}").glob(".backend.tmp*")),
    7: lambda r: (r / f"exp/{NAME}/scores").exists(),
    8: lambda r: any((r / f"exp/{NAME}").glob(".package.tmp*")) or (r / f"exp/{NAME}/package").exists(),
}


def kill_mid_stage(root: Path, stage: int) -> None:
    cmd = ["bash", "run.sh", "--config", str(root / "cfg.yaml"), "--stage", str(stage), "--stop_stage", str(stage),
           "--data", str(root / "data"), "--exp", str(root / "exp")]
    proc = start_killable(cmd, ROOT, venv_env())
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not KILL_WHEN[stage](root):
        time.sleep(0.01)
    kill_group(proc)


def texts(root: Path, rel: str, *also: Path) -> dict[str, str]:
    """Every text file under rel (gzip expanded), with the run's root (and `also`) written as <root>;
    a copy's data dirs still name the reference's audio files."""
    out = {}
    for p in sorted((root / rel).rglob("*")):
        if p.is_file() and p.suffix in (".gz", ".scp", ".json", ".md", ".score", ".llr", ".tsv", "") and \
                not p.name.startswith(".") and p.name != "plda":
            raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
            text = raw.decode(errors="replace")
            for r in (root, *also):
                text = text.replace(str(r), "<root>")
            out[str(p.relative_to(root))] = text
    return out


def binaries(root: Path, rel: str, suffixes: tuple[str, ...]) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / rel).rglob("*"))
            if p.is_file() and (p.suffix in suffixes or p.name in suffixes)}


def vectors(root: Path, scp: str) -> dict[str, np.ndarray]:
    return dict(kaldiio.load_scp_sequential(str(root / scp)))


@pytest.mark.parametrize("stage", [2, 4, 5, 6, 7, 8])
def test_stage_killed_midway_then_resumed_equals_uninterrupted(reference, tmp_path, stage):
    root = copy_of(reference, tmp_path)
    for rel in REDO[stage]:
        p = root / rel
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
    kill_mid_stage(root, stage)
    proc = run_stages(root, stage, stage)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    if stage == 2:
        assert texts(root, "data/manifests", reference) == texts(reference, "data/manifests")
        assert binaries(root, "data/augment", (".wav",)) == binaries(reference, "data/augment", (".wav",))
    if stage == 4:
        ref = load_file(str(reference / f"exp/{NAME}/model/model.safetensors"))
        got = load_file(str(root / f"exp/{NAME}/model/model.safetensors"))
        assert ref.keys() == got.keys() and all(np.array_equal(ref[k], got[k]) for k in ref)
        assert (root / f"exp/{NAME}/model").resolve() == (root / f"exp/{NAME}/lm/final")
    if stage == 5:
        for s in ("train", "dev", "test"):
            for scp in ("xvector.scp", "spk_xvector.scp"):
                a, b = vectors(reference, f"exp/{NAME}/embeddings/{s}/{scp}"), vectors(root, f"exp/{NAME}/embeddings/{s}/{scp}")
                assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    if stage == 6:
        backend = f"exp/{NAME}/backend"
        assert binaries(root, backend, ("mean.vec", "lda.mat", "plda", ".ark")) == \
            binaries(reference, backend, ("mean.vec", "lda.mat", "plda", ".ark"))
        assert texts(root, backend, reference) == texts(reference, backend)
    if stage == 7:
        assert texts(root, f"exp/{NAME}/scores", reference) == texts(reference, f"exp/{NAME}/scores")
        assert json.loads((root / f"exp/{NAME}/results.json").read_text()) == \
            json.loads((reference / f"exp/{NAME}/results.json").read_text())
    if stage == 8:
        assert binaries(root, f"exp/{NAME}/package", (".safetensors", ".ark", "plda")) == \
            binaries(reference, f"exp/{NAME}/package", (".safetensors", ".ark", "plda"))
    leftovers = [p for p in root.rglob(".*tmp*")]
    assert not leftovers, leftovers


def test_finished_pipeline_rerun_does_nothing(reference):
    proc = run_stages(reference, 0, 8)
    assert proc.returncode == 0
    log = proc.stdout + proc.stderr
    for said in ("data already prepared", "stage 1: manifests of", "augmentation resources already made",
                 "already trained", "already complete", "back-end already trained", "already scored",
                 "package already made"):
        assert said in log, said


def test_unwritable_output_directory(reference, tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where a directory should be")
    proc = run_step("augment", *set_args(PIPELINE), "--data", str(blocker / "data"))
    assert_clean_error(proc, str(blocker))


def test_a_write_that_fails_leaves_nothing_half_written(reference, tmp_path):
    """Disk full, simulated: every rename into place fails with ENOSPC."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import errno, os\n"
        "def _full(src, dst, *a, **k):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device', str(dst))\n"
        "os.replace = _full\n")
    root = copy_of(reference, tmp_path)
    for rel in REDO[6]:
        p = root / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    proc = run_step("backend", "--config", str(root / "cfg.yaml"), "--data", str(root / "data"),
                  "--exp", str(root / "exp"), env={"PYTHONPATH": f"{hook}:{ROOT}"})
    assert_clean_error(proc, "No space left on device")
    assert not (root / f"exp/{NAME}/backend").exists()
    assert not list((root / f"exp/{NAME}").glob(".*tmp*"))
    assert not (root / f"exp/{NAME}/.done/stage6_backend.json").exists()
