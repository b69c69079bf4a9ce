"""scancel / preemption of a 2-process torchrun run: SIGTERM to the whole process group mid-epoch.

Slurm signals every process of a job step (torchrun, the trainers and their DataLoader workers),
as os.killpg on each of their process groups does here. The run must save a checkpoint at the signal, every rank must wait for it,
the exit must be clean, and the resumed run must end where an uninterrupted one does.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import MICRO, ROOT, run_py, set_args, start_killable
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

# Rank 0's checkpoint write made slow (a large checkpoint on a network file system) once a stop
# signal has come; each rank notes when it exits and rank 0 when its last save ended.
SLOW_SAVE_LAUNCHER = """
import atexit, os, runpy, sys, time
from pathlib import Path

out = Path(sys.argv.pop(1))
rank = os.environ["RANK"]
atexit.register(lambda: (out / f"exit.{rank}").write_text(repr(time.time())))
if rank == "0":
    from voxadapt.train import checkpoint as ckpt_io, interrupt

    signalled = []
    handle, save = interrupt.StopRequested._handle, ckpt_io.save_checkpoint

    def note(self, signum, frame):
        signalled.append(signum)
        handle(self, signum, frame)

    def slow_save(*args, **kwargs):
        if signalled:
            time.sleep(3)
        save(*args, **kwargs)
        (out / "saved").write_text(repr(time.time()))

    interrupt.StopRequested._handle, ckpt_io.save_checkpoint = note, slow_save
runpy.run_module("voxadapt.stages", run_name="__main__", alter_sys=True)  # argv: train and its arguments
"""


@pytest.fixture(scope="module")
def teacher(tiny_data, tmp_path_factory):
    """A distillation teacher (an untrained micro MHFA model) over the training classes."""
    from voxadapt.config import load_config
    from voxadapt.data.examples import ExampleTable
    from voxadapt.layout import DataLayout
    from voxadapt.models.speaker import build_model, save_model_dir

    cfg = load_config(None, MICRO)
    speeds = cfg.augment.speeds if cfg.augment.speed_perturb else []
    classes = ExampleTable.from_manifest(DataLayout(tiny_data).cuts(cfg.data.sets.train), cfg.data.sample_rate,
                                         speeds).classes
    model, head = build_model(cfg, len(classes))
    out = tmp_path_factory.mktemp("teacher") / "model"
    save_model_dir(out, cfg, model, head, classes)
    return out


def overrides(teacher) -> list[str]:
    """Loader workers, DropClass over the batch's classes, class + distillation tokens: every part
    of the state a resume must bring back."""
    return MICRO + [
        "train.deterministic=true", "loader.num_workers=1",
        "model.backend.type=clstoken", "model.backend.token_dim=32", "model.backend.token_layers=1",
        "model.backend.token_heads=2", "model.backend.token_ffn=64", "model.backend.class_token=sampled",
        "model.backend.token_bank=4", "model.backend.distill_token=true", f"model.distill.teacher={teacher}",
        "train.phases.0.epochs=1", "train.phases.0.average_last=1",
        "train.phases.0.dropclass={every_steps: 5, drop: 6, batch_classes_only: true, with_draws: true}",
    ]


def torchrun_args(tiny_data, exp, over) -> list[str]:
    return ["--standalone", "--nproc_per_node", "2", "-m", "voxadapt.stages", "train", *set_args(over),
            "--data", str(tiny_data), "--exp", str(exp)]


def process_groups(root: int) -> set[int]:
    """The process groups of `root` and its descendants (torchrun starts each worker in its own)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    tree, grew = {root}, True
    while grew:
        more = {p for p, pp in parent.items() if pp in tree} - tree
        tree |= more
        grew = bool(more)
    groups = set()
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    return groups


def final_weights(exp):
    (final,) = exp.glob("*/main/final/model.safetensors")
    return load_file(str(final))


def test_sigterm_to_the_process_group_saves_waits_and_resumes_to_the_same_weights(tiny_data, teacher, tmp_path):
    signal_then_resume(tiny_data, overrides(teacher), tmp_path, exact=True)


def signal_then_resume(tiny_data, over: list[str], tmp_path: Path, exact: bool) -> None:
    """A 2-process run signalled mid-epoch saves at the signal on both ranks, rank 1 leaves only after
    rank 0's slow write, and the resumed run ends at an uninterrupted run's weights (bit for bit when
    `exact`; on GPUs, whose kernels need not be deterministic, within a tolerance)."""
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    launcher = tmp_path / "launcher.py"
    launcher.write_text(SLOW_SAVE_LAUNCHER)
    marks = tmp_path / "marks"
    marks.mkdir()
    exp = tmp_path / "killed"
    args = torchrun_args(tiny_data, exp, over)
    cmd = [sys.executable, str(ROOT / "pyscripts" / "torchrun.py"), *args[:3], str(launcher), str(marks), *args[5:]]
    proc = start_killable(cmd, ROOT, env)
    ckpts = exp / "mhfa_tiny" / "main" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (ckpts / "ckpt-000000006.pt").exists():
        time.sleep(0.02)
    for group in process_groups(proc.pid):  # as scancel does: torchrun, both ranks, their loader workers
        os.killpg(group, signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)

    assert proc.returncode == 130, out[-3000:]
    assert "Traceback" not in out and "ERROR: training interrupted" in out, out[-3000:]
    saved = [int(s) for s in re.findall(r"interrupted: checkpoint saved at step (\d+)", out)]
    assert len(saved) == 2 and saved[0] == saved[1] > 6, out[-3000:]  # both ranks, a step after the waited-for one
    assert (ckpts / f"ckpt-{saved[0]:09d}.pt").is_file()
    # Rank 1 left only after rank 0's (slow) checkpoint write had ended.
    assert float((marks / "exit.1").read_text()) >= float((marks / "saved").read_text())

    resumed = run_py("torchrun.py", *torchrun_args(tiny_data, exp, over), env=env)
    assert resumed.returncode == 0 and f"resuming from ckpt-{saved[0]:09d}.pt" in resumed.stderr, resumed.stderr[-3000:]
    whole = run_py("torchrun.py", *torchrun_args(tiny_data, tmp_path / "whole", over), env=env)
    assert whole.returncode == 0, whole.stderr[-3000:]
    ref, got = final_weights(tmp_path / "whole"), final_weights(exp)
    assert ref.keys() == got.keys()
    for k in ref:
        if exact:
            assert np.array_equal(ref[k].numpy(), got[k].numpy()), k
        else:
            np.testing.assert_allclose(got[k].float().numpy(), ref[k].float().numpy(), rtol=1e-3, atol=1e-5, err_msg=k)
