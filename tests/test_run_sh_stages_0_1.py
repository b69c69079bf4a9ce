"""run.sh stages 0-1 from a clean checkout: outputs, idempotence, and recovery after SIGKILL."""

from __future__ import annotations

import filecmp
import time

import pytest
from helpers import TINY, clean_checkout, kill_group, run_sh, start_killable, venv_env, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    root = clean_checkout(tmp_path_factory.mktemp("clone"))
    write_config(root / "tiny.yaml", TINY + ["name=tiny"])
    return root


def same_tree(a, b, strip_a, strip_b):
    """Data dirs equal byte for byte, except the absolute audio root inside wav.scp."""
    for name in ("wav.scp", "utt2spk", "spk2utt", "reco2dur", "trials"):
        fa, fb = a / name, b / name
        if fa.exists() or fb.exists():
            assert fa.read_text().replace(str(strip_a), "") == fb.read_text().replace(str(strip_b), ""), (a, name)


def test_stages_0_1_resume_and_idempotence(checkout, tiny_data, tmp_path):
    env = venv_env()
    data = tmp_path / "data"
    args = ["--config", "tiny.yaml", "--stop_stage", "1", "--data", str(data), "--exp", str(tmp_path / "exp")]

    # Kill stage 0 once it has written some audio: nothing may look complete afterwards.
    proc = start_killable(["bash", "run.sh", *args], checkout, env)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((data / "audio").rglob("*.wav"))) < 10:
        time.sleep(0.05)
    kill_group(proc)
    assert not (data / ".done" / "stage0_data.json").exists()
    assert not (data / "manifests").exists()

    first = run_sh("run.sh", *args, cwd=checkout, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    for name in ("train", "dev", "test"):
        same_tree(data / name, tiny_data / name, data, tiny_data)
        for f in (data / name).iterdir():
            assert not f.name.startswith("."), f  # no temporaries left behind
    for wav in (tiny_data / "audio").rglob("*.wav"):
        assert filecmp.cmp(wav, data / wav.relative_to(tiny_data), shallow=False)
    assert (data / "manifests" / "train" / "cuts.jsonl.gz").is_file()

    again = run_sh("run.sh", *args, cwd=checkout, env=env)
    assert again.returncode == 0
    assert "stage 0: data already prepared" in again.stderr or "already prepared" in again.stderr
    assert "manifests of train, dev, test already made; nothing to do" in again.stderr


def test_changed_settings_are_refused_not_mixed(checkout, tmp_path):
    env = venv_env()
    data = tmp_path / "data"
    assert run_sh("run.sh", "--config", "tiny.yaml", "--stop_stage", "0", "--data", str(data),
                  cwd=checkout, env=env).returncode == 0
    write_config(checkout / "other.yaml", TINY + ["name=tiny", "data.synthetic.seed=5"])
    proc = run_sh("run.sh", "--config", "other.yaml", "--stop_stage", "0", "--data", str(data), cwd=checkout, env=env)
    assert proc.returncode != 0 and "made with different settings (synthetic.seed: 0 -> 5)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_sh_rejects_unknown_options(checkout):
    proc = run_sh("run.sh", "--no-such-option", "1", cwd=checkout, env=venv_env())
    assert proc.returncode != 0 and "unknown option '--no-such-option'" in proc.stderr


def test_data_dirs_move_with_the_recipe(tmp_path):
    """data/ made in one checkout works in another once the first is gone: wav.scp paths are
    relative to the recipe root (Kaldi's convention) and markers hold digests of content."""
    import shutil

    env = venv_env()
    first = clean_checkout(tmp_path / "first")
    write_config(first / "tiny.yaml", TINY + ["name=tiny"])
    args = ["--config", "tiny.yaml", "--stop_stage", "1"]
    assert run_sh("run.sh", *args, cwd=first, env=env).returncode == 0
    line = (first / "data" / "train" / "wav.scp").read_text().splitlines()[0]
    assert line.split(" ", 1)[1].startswith("data/audio/synthetic/"), line
    second = clean_checkout(tmp_path / "second")
    shutil.copy(first / "tiny.yaml", second / "tiny.yaml")
    shutil.move(first / "data", second / "data")
    shutil.rmtree(first)
    proc = run_sh("run.sh", *args, cwd=second, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "already prepared" in proc.stderr and "already made; nothing to do" in proc.stderr
    proc = run_sh("utils/validate_data_dir.sh", "data/train", cwd=second, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
