"""Training under torchrun (gloo, 2 CPU processes) and what must not depend on the process count:
per-rank RNG streams saved and restored per rank, rank-0 work longer than the collective timeout,
the batch's class set and L2-SP normalisation over the global batch; and the training mode and
devices a run keeps through evaluation and resume."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import MICRO, run_py, set_args
from test_train import _losses

from voxadapt.config import PhaseConfig, load_config
from voxadapt.layout import DataLayout, ExpLayout
from voxadapt.models.speaker import build_model
from voxadapt.train import checkpoint as ckpt_io
from voxadapt.train.distributed import DistInfo, init_distributed
from voxadapt.train.trainer import PhaseTrainer

NO_DROPOUT = ('{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, '
              '"conv_dim": [16, 16, 32, 32, 32, 32, 32], "num_conv_pos_embeddings": 8, '
              '"num_conv_pos_embedding_groups": 4, "hidden_dropout": 0.0, "attention_dropout": 0.0, '
              '"activation_dropout": 0.0, "feat_proj_dropout": 0.0}')

# Stage 3 under torchrun with probes: every rank's RNG state at each step, and a first validation
# on rank 0 that sleeps SLOW_VALIDATION_S (longer than the collective timeout).
PROBE = '''
import hashlib, os, runpy, sys, time
import torch
from voxadapt.train.dev_eer import DevEer
from voxadapt.train.trainer import PhaseTrainer

out, slow = os.environ["PROBE_DIR"], [float(os.environ.get("SLOW_VALIDATION_S", "0"))]
real_step, real_valid, done = PhaseTrainer._train_step, DevEer.__call__, {}

def step(self, batch, margin, *rest):
    n = done[id(self)] = done.get(id(self), self.summary["start_step"] - 1) + 1
    with open(os.path.join(out, f"rank{self.info.rank}.tsv"), "a") as f:
        f.write(f"{n}\\t{hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest()}\\n")
    return real_step(self, batch, margin, *rest)

def valid(self, *args):
    time.sleep(slow.pop() if slow else 0)
    return real_valid(self, *args)

PhaseTrainer._train_step, DevEer.__call__ = step, valid
runpy.run_module("voxadapt.stages", run_name="__main__", alter_sys=True)  # argv: train and its arguments
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(n: int, tiny_data: Path, exp: Path, overrides: list[str], script: Path | None = None,
             env: dict | None = None):  # noqa: ANN201
    args = [str(script), "train"] if script else ["-m", "voxadapt.stages", "train"]
    return run_py("torchrun.py", "--nproc_per_node", str(n), "--master_port", str(free_port()), *args,
                  *set_args(overrides), "--data", str(tiny_data), "--exp", str(exp), env={"OMP_NUM_THREADS": "1", **(env or {})})


def test_restored_kept_classes_go_to_the_training_device(tmp_path, monkeypatch):
    # The checkpoint is read on the CPU; training (here a stand-in device) must get them where its labels are.
    trainer = PhaseTrainer.__new__(PhaseTrainer)
    stub = SimpleNamespace(load_state_dict=lambda state: None)
    trainer.info = DistInfo(0, 0, 1, torch.device("meta"))
    trainer.phase, trainer.ckpt_dir, trainer.fingerprint = PhaseConfig(), tmp_path, {}
    trainer.model = trainer.head = trainer.optimizer = trainer.scaler = trainer.sampler = stub
    trainer.distiller, trainer.dropadapt = None, SimpleNamespace(dropped=[])
    ckpt = {"model": {}, "head": {}, "optimizer": {}, "scaler": {}, "sampler": {}, "dropadapt": [1, 3],
            "head_classes": torch.tensor([0, 2, 4]), "rng": ckpt_io.rng_state(torch.device("cpu")), "step": 7,
            "path": tmp_path / "ckpt-000000007.pt"}
    monkeypatch.setattr(ckpt_io, "latest_checkpoint", lambda directory, fingerprint: ckpt)
    assert trainer._restore() == 7
    assert trainer.head_classes.device == trainer.info.device and trainer.head_classes.shape == (3,)
    assert trainer.dropadapt.dropped == [1, 3]


@pytest.mark.slow
def test_frozen_backbone_stays_in_eval_mode_through_validation_and_dropadapt(tiny_data, tmp_path, monkeypatch):
    cfg = load_config(None, MICRO + [
        "train.phases=[{name: main, epochs: 2, trainable_layers: 0, lr: 0.005, average_last: 1, "
        "dropadapt: {every_steps: 2, drop: 2, max_utts: 4, crop_seconds: 0.5}}]", "loader.batches_per_epoch=3"])
    trainer = PhaseTrainer(cfg, cfg.train.phases[0], 0, DataLayout(tiny_data), ExpLayout(tmp_path), None,
                           init_distributed("cpu"))
    modes = []
    real_step = PhaseTrainer._train_step

    def step(self, batch, margin, *rest):  # noqa: ANN001, ANN202
        modes.append((self.model.backbone.training, self.model.backend.training))
        return real_step(self, batch, margin, *rest)

    monkeypatch.setattr(PhaseTrainer, "_train_step", step)
    trainer.run()
    drops = (ExpLayout(tmp_path).phase_dir("main") / "dropadapt.tsv").read_text().splitlines()
    assert len(drops) == 1 + 3 * 2 and trainer.validator is not None  # DropAdapt at steps 0, 2, 4; 2 validations
    assert modes == [(False, True)] * 6  # the back-end trains; the frozen backbone never gets dropout


@pytest.mark.slow
def test_one_and_two_processes_agree_with_normalized_l2sp_batch_classes_and_layerdrop(tiny_data, tmp_path):
    """LayerDrop's draws are shared by the ranks, so DDP (looking for unused parameters) sees the same
    skipped layers on each, and L2-SP leaves those layers out, so no gradient reaches them after DDP
    counted them unused: the run is that of one process."""
    over = MICRO + [f"model.backbone.arch={NO_DROPOUT}", "train.phases.0.epochs=1", "train.phases.0.average_last=1",
                    "train.phases.0.l2sp=normalized", "train.phases.0.dropclass.batch_classes_only=true",
                    "train.phases.0.layerdrop=0.5", "loader.batches_per_epoch=6"]
    cfg = load_config(None, over)
    model, _ = build_model(cfg, 2)
    model.backbone.enable_layerdrop(0.5)
    assert any(model.backbone.draw_layer_drops(cfg.seed * 1000, step) for step in range(6))  # phase 0's seed
    losses = {}
    for n in (1, 2):
        exp = tmp_path / f"exp{n}"
        proc = torchrun(n, tiny_data, exp, over)
        assert proc.returncode == 0, proc.stderr[-3000:]
        losses[n] = _losses(exp)
    # The whole curve: every step's loss depends on all earlier updates. (Weights are not compared:
    # parameters without a true gradient, e.g. the key biases, get rounding noise that AdamW scales up.)
    assert len(losses[1]) == len(losses[2]) == 6
    np.testing.assert_allclose(losses[2], losses[1], rtol=1e-5)


@pytest.fixture(scope="module")
def probed_run(tiny_data, tmp_path_factory):
    """2 ranks, 2 epochs of 3 steps, a 3 s collective timeout and a first validation of 6 s on rank 0."""
    root = tmp_path_factory.mktemp("ddp")
    (root / "probe.py").write_text(PROBE)
    over = MICRO + ["train.phases.0.checkpoint_every_steps=0", "loader.batches_per_epoch=3",
                    "train.collective_timeout_s=3"]
    (root / "first").mkdir()
    proc = torchrun(2, tiny_data, root / "exp", over, root / "probe.py",
                    {"PROBE_DIR": str(root / "first"), "SLOW_VALIDATION_S": "6"})
    return root, over, proc


def _records(directory: Path, rank: int) -> dict[int, str]:
    return dict(line.split("\t") for line in (directory / f"rank{rank}.tsv").read_text().splitlines())


@pytest.mark.slow
def test_rank_0_work_longer_than_the_collective_timeout(probed_run):
    root, _, proc = probed_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "validation EER" in proc.stderr and (root / "exp" / "mhfa_tiny" / "main" / "done.json").is_file()


@pytest.mark.slow
def test_ranks_have_their_own_rng_streams_saved_and_restored_per_rank(tiny_data, probed_run):
    root, over, proc = probed_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = [_records(root / "first", r) for r in (0, 1)]
    assert len(first[0]) == len(first[1]) == 6
    assert all(first[0][s] != first[1][s] for s in first[0])  # dropout differs across ranks
    phase = root / "exp" / "mhfa_tiny" / "main"
    ckpt = torch.load(phase / "checkpoints" / "ckpt-000000003-end0000.pt", weights_only=True)
    assert len(ckpt["rng"]) == 2
    # Back to the end of epoch 1, as if killed there: each rank resumes its own stream.
    (phase / "checkpoints" / "ckpt-000000006-end0001.pt").unlink()
    (phase / "done.json").unlink()
    shutil.rmtree(phase / "final")
    (root / "resumed").mkdir()
    proc = torchrun(2, tiny_data, root / "exp", over, root / "probe.py", {"PROBE_DIR": str(root / "resumed")})
    assert proc.returncode == 0 and "resuming from ckpt-000000003" in proc.stderr, proc.stderr[-3000:]
    for rank in (0, 1):
        resumed = _records(root / "resumed", rank)
        assert sorted(resumed) == ["3", "4", "5"]
        assert all(resumed[s] == first[rank][s] for s in resumed), rank
