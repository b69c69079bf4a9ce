"""Shared test helpers: small audio files, data dirs, and running pyscripts as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent

# A small synthetic corpus: enough speakers and trials for every stage, fast to make.
TINY = [
    "data.synthetic.num_train_speakers=12",
    "data.synthetic.num_dev_speakers=3",
    "data.synthetic.num_test_speakers=4",
    "data.synthetic.utts_per_speaker=5",
    "data.synthetic.num_trials=120",
    "data.synthetic.dev_trials=40",
    "data.synthetic.min_duration=2.0",
    "data.synthetic.max_duration=4.0",
    "augment.generated_noises=9",
    "augment.generated_music=4",
    "augment.generated_rirs=20",
    "augment.generated_seconds=4.0",
]


def set_args(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def write_wav(path: Path, seconds: float = 1.0, sr: int = 16000, channels: int = 1, seed: int = 0,
              amplitude: float = 0.1, subtype: str = "PCM_16") -> Path:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((int(seconds * sr), channels)) * amplitude).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x if channels > 1 else x[:, 0], sr, subtype=subtype)
    return path


def make_data_dir(root: Path, speakers: dict[str, int], seconds: float = 1.0, sr: int = 16000) -> Path:
    """A valid data dir with `speakers[spk]` utterances each; audio under root/wav/."""
    root.mkdir(parents=True, exist_ok=True)
    wav, utt2spk = [], []
    seed = 0
    for spk in sorted(speakers):
        for i in range(speakers[spk]):
            utt = f"{spk}-{i:03d}"
            p = write_wav(root / "wav" / f"{utt}.wav", seconds, sr, seed=seed)
            seed += 1
            wav.append(f"{utt} {p}")
            utt2spk.append(f"{utt} {spk}")
    (root / "wav.scp").write_text("\n".join(sorted(wav)) + "\n")
    (root / "utt2spk").write_text("\n".join(sorted(utt2spk)) + "\n")
    spk2utt = [f"{s} " + " ".join(f"{s}-{i:03d}" for i in range(n)) for s, n in sorted(speakers.items())]
    (root / "spk2utt").write_text("\n".join(spk2utt) + "\n")
    return root


def run_py(script: str, *args: str, env: dict | None = None, cwd: Path | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "pyscripts" / script), *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=timeout)


def run_step(step: str, *args: str, env: dict | None = None, cwd: Path | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess:
    """One step of `python -m voxadapt.stages` (run.sh's stages, `paths`, `config`), as run.sh runs it."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "voxadapt.stages", step, *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd or ROOT, timeout=timeout)


def run_sh(script: str, *args: str, env: dict | None = None, cwd: Path | None = None,
           timeout: float = 900) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(["bash", str((cwd or ROOT) / script), *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or ROOT, timeout=timeout)


def assert_clean_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """A user error: non-zero exit, no traceback, one 'ERROR:' line containing every fragment."""
    assert proc.returncode != 0, f"expected failure, got success:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, proc.stderr
    for frag in fragments:
        assert frag in errors[0], f"{frag!r} not in {errors[0]!r}"
    return errors[0]


def write_config(path: Path, overrides: list[str], base: str | None = None) -> Path:
    """Resolve `base` (a conf/ file) + overrides into a standalone YAML for run.sh --config."""
    from voxadapt.config import dump_yaml, load_config

    path.write_text(dump_yaml(load_config(base and ROOT / base, overrides)))
    return path


def clean_checkout(dest: Path) -> Path:
    """Copy what a commit of this tree holds (tracked + new unignored files): a fresh clone."""
    import shutil

    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def venv_env() -> dict:
    """Run recipe scripts in the already-built virtualenv (path.sh then only activates it)."""
    return {"VOXADAPT_VENV": sys.prefix}


def start_killable(cmd: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def hold_lock(lock: Path, seconds: int) -> subprocess.Popen:
    """Another run holding `lock` (as run.sh and local/evaluate.sh do) for `seconds`; kill_group ends it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(["flock", "-x", str(lock), "sleep", str(seconds)], start_new_session=True)
    while subprocess.run(["flock", "-n", "-s", str(lock), "true"]).returncode == 0:
        pass  # until the holder has it
    return holder


def kill_group(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# A micro backbone and short phase: real training code paths in seconds on a CPU.
MICRO_ARCH = ('{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, '
              '"conv_dim": [16, 16, 32, 32, 32, 32, 32], "num_conv_pos_embeddings": 8, '
              '"num_conv_pos_embedding_groups": 4}')
MICRO = TINY + [
    f"model.backbone.arch={MICRO_ARCH}",
    "model.backend.heads=4", "model.backend.compression_dim=16", "model.backend.embed_dim=32",
    "loader.crop_seconds=1.0", "loader.batch_size=8", "loader.num_workers=0",
    "train.num_threads=1",
    "train.phases=[{name: main, epochs: 2, lr: 0.005, backbone_lr: 0.001, layer_decay: 0.8, margin: 0.2, "
    "margin_ramp: [0, 1], warmup_epochs: 0.5, schedule: exponential, l2sp: normalized, checkpoint_every_steps: 3, "
    "average_last: 2}]",
]


# The micro model through every stage, deterministic: the uninterrupted reference pipeline.
PIPELINE = MICRO + [
    "train.deterministic=true",
    "adapt.phases=[{name: lm, epochs: 1, lr: 0.001, backbone_lr: 0.0001, margin: 0.3, crop_seconds: 1.5, "
    "checkpoint_every_steps: 4, average_last: 1}]",
    "scoring.lda_dim=16", "scoring.asnorm_top_n=5", "scoring.calibration_trials=200",
    "data.degraded.enabled=true",
]


def run_stages(root: Path, first: int, last: int) -> subprocess.CompletedProcess:
    """run.sh on root/cfg.yaml with root/data and root/exp."""
    return run_sh("run.sh", "--config", str(root / "cfg.yaml"), "--stage", str(first), "--stop_stage", str(last),
                  "--data", str(root / "data"), "--exp", str(root / "exp"), env=venv_env())
