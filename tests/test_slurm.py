"""Stage 5 and training through a real one-node Slurm cluster on localhost.

As root, Slurm is installed from Debian when missing (slurm-wlm, munge) and its daemons are
started for these tests and stopped afterwards; otherwise the tests are skipped, saying why.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest
from helpers import MICRO, ROOT, run_sh, venv_env, write_config
from slurm_cluster import LocalSlurm, SlurmUnavailable

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as err:
        cluster.stop()
        pytest.skip(f"no real Slurm: {err}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def slurm_opts(tmp_path_factory):
    conf = tmp_path_factory.mktemp("slurmconf") / "slurm.conf"
    conf.write_text('partition=""\nmem=2G\ntime=00:30:00\nextra_args=""\n')
    return conf


def test_stage5_through_slurm_equals_local(slurm, slurm_opts, tiny_data, tmp_path):
    from voxadapt.config import load_config
    from voxadapt.data.kaldi_dir import DataDir
    from voxadapt.models.speaker import build_model, save_model_dir

    cfg = load_config(None, MICRO)
    model, head = build_model(cfg, 36)
    outs = {}
    for launcher in ("local", "slurm"):
        exp = tmp_path / launcher / "exp" / "mhfa_tiny"
        save_model_dir(exp / "main" / "final", cfg, model, head, [f"c{i}" for i in range(36)])
        (exp / "model").symlink_to("main/final")
        data = tmp_path / launcher / "data"
        for s in ("train", "dev", "test"):
            shutil.copytree(tiny_data / s, data / s, ignore=shutil.ignore_patterns("split*"))
        write_config(tmp_path / launcher / "micro.yaml", MICRO)
        cmd = ("utils/run_slurm.sh --config " + str(slurm_opts)) if launcher == "slurm" else "utils/run_local.sh"
        # One set: every set's jobs take the same road, and each costs a job start and a graph export.
        proc = run_sh("run.sh", "--stage", "5", "--stop_stage", "5", "--config", str(tmp_path / launcher / "micro.yaml"),
                      "--nj", "2", "--extract_sets", "test", "--data", str(data), "--exp", str(tmp_path / launcher / "exp"),
                      env={**venv_env(), **slurm.env, "extract_cmd": cmd})
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        outs[launcher] = exp / "embeddings"
    assert "Slurm job" in (outs["slurm"] / "test" / "log" / "extract.1.log").read_text()
    assert not (outs["slurm"] / "train").exists()
    a = dict(kaldiio.load_scp_sequential(str(outs["local"] / "test" / "xvector.scp")))
    b = dict(kaldiio.load_scp_sequential(str(outs["slurm"] / "test" / "xvector.scp")))
    assert a.keys() == set(DataDir.load(data / "test").utterance_ids)
    assert a.keys() == b.keys()
    # Same code and machine, but a Slurm job may see another thread count: equal to float rounding.
    assert all(np.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)


def _submit_training(slurm, tiny_data, tmp_path: Path, *sbatch_opts: str, epochs: int = 1) -> str:
    """local/slurm_train.sbatch for the micro model; the job id."""
    write_config(tmp_path / "micro.yaml", MICRO + [f"train.phases.0.epochs={epochs}", "train.phases.0.average_last=1"])
    return subprocess.run(["sbatch", "--parsable", "--nodes=1", "--cpus-per-task=2", "--mem=4G", *sbatch_opts,
                           f"--output={tmp_path}/slurm-%j.out", str(ROOT / "local" / "slurm_train.sbatch"),
                           "--config", str(tmp_path / "micro.yaml"), "--data", str(tiny_data), "--exp", str(tmp_path / "exp")],
                          cwd=ROOT, env={**os.environ, **venv_env(), **slurm.env}, capture_output=True, text=True,
                          check=True).stdout.strip()


def _job_field(slurm, job: str, field: str) -> str:
    out = subprocess.run(["scontrol", "-o", "show", "job", job], env={**os.environ, **slurm.env}, capture_output=True,
                         text=True).stdout
    found = re.search(rf"\b{field}=(\S+)", out)
    return found.group(1) if found else ""


def _wait_finished(slurm, job: str, deadline: float) -> str:
    while time.time() < deadline and _job_field(slurm, job, "JobState") not in ("COMPLETED", "FAILED", "CANCELLED"):
        time.sleep(0.5)
    return _job_field(slurm, job, "JobState")


def test_training_example_script_under_sbatch(slurm, tiny_data, tmp_path):
    """The script trains to the final model, not requeued; with one node the rendezvous port is
    torchrun's free one, so a port that the old formula (29500 + job id % 1000) would pick, held by
    another job or program, is no obstacle."""
    job = _submit_training(slurm, tiny_data, tmp_path, "--hold")
    with socket.socket() as taken:
        taken.bind(("", 29500 + int(job) % 1000))
        taken.listen()
        subprocess.run(["scontrol", "release", job], env={**os.environ, **slurm.env}, check=True)
        state = _wait_finished(slurm, job, time.time() + 300)
    out = (tmp_path / f"slurm-{job}.out").read_text()
    assert state == "COMPLETED", out[-3000:]
    assert _job_field(slurm, job, "Restarts") == "0" and "requeue" not in out, out[-3000:]
    assert (tmp_path / "exp" / "mhfa_tiny" / "model" / "model.safetensors").is_file()
    assert filecmp.cmp(tmp_path / "exp" / "mhfa_tiny" / "model" / "model.safetensors",
                       tmp_path / "exp" / "mhfa_tiny" / "main" / "final" / "model.safetensors")


def test_scancel_saves_a_checkpoint_before_the_kill(slurm, tiny_data, tmp_path):
    """scancel (as the time limit and preemption do): SIGTERM to every process of the job, SIGKILL
    after KillWait. The step's first process (run.sh) must not die of it, or Slurm kills the
    training mid-save: the trainer saves after the step it is in, and the job ends cancelled."""
    job = _submit_training(slurm, tiny_data, tmp_path, epochs=3)
    ckpts = tmp_path / "exp" / "mhfa_tiny" / "main" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not list(ckpts.glob("ckpt-*.pt")):
        time.sleep(0.1)
    first = sorted(p.name for p in ckpts.glob("ckpt-*.pt"))
    subprocess.run(["scancel", job], env={**os.environ, **slurm.env}, check=True)
    state = _wait_finished(slurm, job, deadline)  # CANCELLED at once; the processes end after it
    while time.time() < deadline and any(_is_trainer(p, tmp_path) for p in Path("/proc").glob("[0-9]*")):
        time.sleep(0.2)
    log = (tmp_path / "exp" / "mhfa_tiny" / "log" / "train.log").read_text()
    assert state == "CANCELLED", state
    assert "checkpoint saved at step" in log, log[-3000:]
    assert sorted(p.name for p in ckpts.glob("ckpt-*.pt"))[-1] > first[-1], log[-3000:]
    assert _job_field(slurm, job, "Restarts") == "0"


def _is_trainer(proc: Path, exp_root: Path) -> bool:
    try:
        args = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"voxadapt.stages" in args and b"train" in args and str(exp_root).encode() in b" ".join(args)


def test_time_limit_warning_saves_requeues_and_resumes(slurm, tiny_data, tmp_path):
    """The warning before the time limit (--signal=B:USR1@300 in the script; sent here at once
    with scancel, as Slurm would): a checkpoint, a requeue, and the requeued job resumes from it."""
    job = _submit_training(slurm, tiny_data, tmp_path, epochs=3)  # still training when the warning comes
    ckpts = tmp_path / "exp" / "mhfa_tiny" / "main" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not list(ckpts.glob("ckpt-*.pt")):
        time.sleep(0.1)
    # The step has the job's CPUs (srun of some Slurm releases gives one per task unless told), seen
    # in the CPU affinity that Slurm's task plug-in gives the trainer.
    trainers = [p for p in Path("/proc").glob("[0-9]*") if _is_trainer(p, tmp_path)]
    assert trainers and all(len(os.sched_getaffinity(int(p.name))) == 2 for p in trainers), trainers
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], env={**os.environ, **slurm.env}, check=True)
    state = _wait_finished(slurm, job, deadline)
    out = (tmp_path / f"slurm-{job}.out").read_text()
    log = (tmp_path / "exp" / "mhfa_tiny" / "log" / "train.log").read_text()
    assert state == "COMPLETED", out[-3000:] + log[-3000:]
    assert _job_field(slurm, job, "Restarts") == "1" and "requeueing job" in out, out[-3000:]
    assert "resuming from ckpt-" in log, log[-3000:]
    assert (tmp_path / "exp" / "mhfa_tiny" / "model" / "model.safetensors").is_file()
