"""local/learning_curves.py: curves read back from the TensorBoard logs the trainer writes."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import ROOT, assert_clean_error

from voxadapt.errors import VoxadaptError
from voxadapt.report.learning_curves import read_curves, running_mean


def fake_training(exp, epochs: int = 3, per_epoch: int = 4) -> None:
    """Scalars as PhaseTrainer logs them: train/* per step, valid/eer per epoch (its step: the epoch)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(exp / "tensorboard" / "main"))
    step = 0
    for epoch in range(epochs):
        for _ in range(per_epoch):
            step += 1
            writer.add_scalar("train/loss", 10.0 - step / 10, step)
            writer.add_scalar("train/accuracy", step / 100, step)
            time.sleep(0.002)  # validation is placed by wall time: keep the events apart
        time.sleep(0.01)
        writer.add_scalar("valid/eer", 0.2 - 0.05 * epoch, epoch)
        time.sleep(0.01)
    writer.close()


def test_validation_eer_sits_at_the_last_step_of_its_epoch(tmp_path):
    fake_training(tmp_path / "exp" / "a")
    c = read_curves(tmp_path / "exp" / "a", "main", "a")
    assert list(c.valid_steps) == [4, 8, 12]
    np.testing.assert_allclose(c.valid_eer, [20.0, 15.0, 10.0])
    assert list(c.train_steps) == list(range(1, 13)) and c.loss[0] == pytest.approx(9.9)
    np.testing.assert_allclose(running_mean(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1.0, 2.0, 4.0, 6.0])
    with pytest.raises(VoxadaptError, match="no TensorBoard log of phase 'adapt'"):
        read_curves(tmp_path / "exp" / "a", "adapt", "a")


def test_the_script_writes_one_png_and_refuses_bad_options(tmp_path):
    for name in ("a", "b"):
        fake_training(tmp_path / name)
    script = [sys.executable, str(ROOT / "local" / "learning_curves.py")]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = tmp_path / "curves.png"
    proc = subprocess.run([*script, "--exp", str(tmp_path / "a"), str(tmp_path / "b"), "--labels", "A", "B",
                           "--reference", "MFCC statistics=7.67", "--out", str(out)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "A: validation EER 20.00, 15.00, 10.00 % at steps 4, 8, 12" in proc.stdout
    for args, fragment in ((["--labels", "A"], "--labels gives 1 labels for 2 experiments"),
                           (["--reference", "MFCC"], "--reference 'MFCC': give NAME=EER"),
                           (["--phase", "adapt"], "no TensorBoard log of phase 'adapt'")):
        proc = subprocess.run([*script, "--exp", str(tmp_path / "a"), str(tmp_path / "b"), *args, "--out",
                               str(tmp_path / "x.png")], capture_output=True, text=True, env=env)
        assert_clean_error(proc, fragment)
        assert not (tmp_path / "x.png").exists()
