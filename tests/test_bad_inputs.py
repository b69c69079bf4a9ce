"""Bad input outside the data dirs: run.sh options, configs, tables from editors, the `voxadapt`
command and API, damaged packages and back-ends. Each must give one 'ERROR:' line naming the
file or option and the fix, a non-zero exit, no traceback, and leave nothing half-written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    ROOT,
    assert_clean_error,
    hold_lock,
    kill_group,
    make_data_dir,
    run_sh,
    run_step,
    set_args,
    venv_env,
    write_wav,
)

from voxadapt.errors import VoxadaptError

# ------------------------------------------------------------------------------ run.sh options


@pytest.mark.parametrize("args, fragments", [
    (["--stage", "abc"], ["--stage 'abc' is not a whole number"]),
    (["--nj", "0"], ["--nj 0 is below 1"]),
    (["--nj", "abc"], ["--nj 'abc' is not a whole number"]),
    (["--stage", "9"], ["--stage 9 is above 8"]),
    (["--stage", "7", "--stop_stage", "5"], ["--stage 7 is after --stop_stage 5"]),
    (["--nproc_per_node", "0"], ["--nproc_per_node 0 is below 1"]),
    (["--nnodes", "2", "--node_rank", "2"], ["--node_rank 2 is above 1"]),
    (["--master_port", "70000"], ["--master_port 70000 is above 65535"]),
    (["--config", "conf/nope.yaml"], ["conf/nope.yaml: config file not found"]),
    (["--train_dir", "/x"], ["--train_dir applies to --corpus kaldi", "the corpus is 'synthetic'"]),
    (["--voxceleb1_root", "/x"], ["--voxceleb1_root applies to --corpus voxceleb"]),
    (["--corpus", "voxceleb", "--trials", "/x"], ["--trials applies to --corpus kaldi"]),
    (["--corpus", "timit"], ["--corpus 'timit' is not one of synthetic, voxceleb, kaldi"]),
    (["--nj=4"], ["write options as '--name value', not '--nj=4'"]),
    (["--nj"], ["option '--nj' needs a value"]),
    (["stage5"], ["unexpected argument 'stage5'"]),
    (["--set"], ["option '--set' needs a value"]),
    (["--set", "train.phases.0.lrr=1"], ["unknown key 'train.phases.0.lrr'"]),
    # --set reaches the config: without the degraded copy the corpus has no test_degraded set
    (["--set", "data.degraded.enabled=false", "--stage", "5", "--extract_sets", "vox3"],
     ["--extract_sets: 'vox3' is not a set of this corpus (train dev test)"]),
    (["--stage", "5", "--extract_sets", "vox3"], ["--extract_sets: 'vox3' is not a set of this corpus (train dev test test_degraded)"]),
])
def test_run_sh_checks_its_options_before_anything_runs(tmp_path, args, fragments):
    proc = run_sh("run.sh", "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"), *args, env=venv_env())
    assert_clean_error(proc, *fragments)
    assert "Done" not in proc.stdout and not (tmp_path / "data").exists() and not (tmp_path / "exp").exists()


def test_run_sh_refuses_output_roots_that_are_files(tmp_path):
    (tmp_path / "f").write_text("")
    for opt in ("--exp", "--data"):
        proc = run_sh("run.sh", opt, str(tmp_path / "f"), env=venv_env())
        assert_clean_error(proc, f"{opt} {tmp_path / 'f'} exists and is not a directory")


@pytest.mark.parametrize("args, fragments", [
    (["--only", "system"], ["--only 'system' is not one of pretraining, dropclass, dropadapt, systems"]),
    (["--scale", "big"], ["--scale 'big' is not tiny or eval"]),
    (["--seeds", "1 two"], ["--seeds '1 two' is not a list of whole numbers"]),
    (["eval"], ["unexpected argument 'eval'"]),
])
def test_run_comparisons_checks_its_options_before_anything_runs(args, fragments):
    proc = run_sh("local/run_comparisons.sh", *args, env=venv_env())
    assert_clean_error(proc, *fragments)
    assert proc.stdout == ""  # no data preparation, no training started


def test_a_second_run_on_an_experiment_in_use_stops(tmp_path):
    expdir = tmp_path / "exp" / "mhfa_tiny"
    holder = hold_lock(expdir / ".lock", 120)
    try:
        proc = run_sh("run.sh", "--stage", "7", "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"),
                      env=venv_env())
    finally:
        kill_group(holder)
    assert_clean_error(proc, f"another run is using {expdir}", "give this run another --exp")
    assert not (expdir / "scores").exists()
    # Released (the holder ended): the next run gets past the lock, to stage 7's own complaint.
    proc = run_sh("run.sh", "--stage", "7", "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"),
                  env=venv_env())
    assert "Stage 7: scoring" in proc.stdout and "another run" not in proc.stderr


def test_a_file_system_without_locks_is_warned_of_not_fatal(tmp_path):
    """Lustre mounted without flock support: the lock cannot be taken; the run goes on, warned."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "flock").write_text("#!/bin/sh\necho 'flock: 10: Function not implemented' >&2\nexit 65\n")
    (bin_dir / "flock").chmod(0o755)
    proc = run_sh("run.sh", "--stage", "7", "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"),
                  env={**venv_env(), "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert f"WARNING: cannot lock {tmp_path / 'exp' / 'mhfa_tiny' / '.lock'} (flock exit 65" in proc.stderr
    assert "Stage 7: scoring" in proc.stdout and "another run" not in proc.stderr


def test_a_run_preparing_data_waits_for_another_preparing_it(tmp_path):
    data = tmp_path / "data"
    holder = hold_lock(data / ".lock", 3)
    proc = run_sh("run.sh", "--config", "conf/mhfa_kaldi.yaml", "--train_dir", str(tmp_path / "nope"), "--test_dir",
                  str(tmp_path / "nope"), "--trials", str(tmp_path / "trials"), "--stop_stage", "0",
                  "--data", str(data), "--exp", str(tmp_path / "exp"), env=venv_env())
    assert holder.poll() == 0  # it ran on only after the other had finished
    assert f"waiting for another run preparing {data}" in proc.stdout
    assert_clean_error(proc, "nope")


# ------------------------------------------------------------------------------ configs


@pytest.mark.parametrize("text, fragments", [
    ("", ["c.yaml: empty config", "base: mhfa_tiny.yaml"]),
    ("# nothing but a comment\n", ["c.yaml: empty config"]),
    ("name: a\nseed: 1\nname: b\n", ["c.yaml:3: key 'name' given twice (first on line 1)"]),
    ("train:\n  phases: []\nloader:\n  batch_size: 4\n  batch_size: 8\n", ["c.yaml:5: key 'batch_size' given twice"]),
    ("\ufeffname: a\nname: b\n", ["key 'name' given twice"]),
    (b"name: \xff\xfe\n", ["c.yaml: not UTF-8 text"]),
])
def test_config_faults(tmp_path, text, fragments):
    path = tmp_path / "c.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert_clean_error(run_step("config", "--config", str(path), "--get", "name"), *fragments)


# ------------------------------------------------------------------------------ tables from editors


def test_byte_order_marks_and_crlf_are_named(tmp_path):
    from voxadapt.data.kaldi_dir import DataDir
    from voxadapt.data.trials import read_trials

    d = make_data_dir(tmp_path / "d", {"a": 2, "b": 1})
    utt2spk = (d / "utt2spk").read_bytes()
    (d / "utt2spk").write_bytes(b"\xef\xbb\xbf" + utt2spk)
    with pytest.raises(VoxadaptError, match=r"utt2spk:1: starts with a UTF-8 byte-order mark.*sed -i"):
        DataDir.load(d)
    (d / "utt2spk").write_bytes(utt2spk.replace(b"\n", b"\r\n", 2).replace(b"\r\n", b"\n", 1))
    with pytest.raises(VoxadaptError, match=r"utt2spk:2: Windows line ending \(CR LF\).*dos2unix"):
        DataDir.load(d)
    (tmp_path / "trials").write_bytes(b"\xef\xbb\xbfa-000 a-001 target\n")
    with pytest.raises(VoxadaptError, match="trials:1: starts with a UTF-8 byte-order mark"):
        read_trials(tmp_path / "trials")


def test_trial_lists_without_repeats_or_self_trials(tmp_path):
    from voxadapt.data.trials import read_trials

    path = tmp_path / "trials"
    path.write_text("a b target\nc d nontarget\na b target\n")
    with pytest.raises(VoxadaptError, match="trials:3: trial 'a b' repeats line 1; delete one"):
        read_trials(path)
    path.write_text("a b target\nc c target\n")
    with pytest.raises(VoxadaptError, match="trials:2: 'c' is scored against itself"):
        read_trials(path)


def test_xvector_lists_name_line_and_reason(tmp_path):
    import kaldiio

    from voxadapt.backend.scoring import Embeddings

    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'x.ark'},{tmp_path / 'x.scp'}") as w:
        for i in range(3):
            w(f"u{i}", np.ones(4, dtype=np.float32) * i)
    scp = (tmp_path / "x.scp").read_text()
    (tmp_path / "crlf.scp").write_text(scp.replace("\n", "\r\n"))
    with pytest.raises(VoxadaptError, match=r"crlf.scp:1: Windows line ending"):
        Embeddings.from_scp(tmp_path / "crlf.scp")
    lines = scp.splitlines()
    (tmp_path / "gone.scp").write_text(f"{lines[0]}\nu9 {tmp_path / 'missing.ark'}:5\n")
    with pytest.raises(VoxadaptError, match=r"gone.scp:2: unreadable x-vector \(FileNotFoundError: .+\)"):
        Embeddings.from_scp(tmp_path / "gone.scp")


def test_wav_scp_command_without_its_pipe_sign(tmp_path):
    from voxadapt.data.audio import read_audio

    wav = write_wav(tmp_path / "a.wav")
    with pytest.raises(VoxadaptError, match=r"looks like a command: end it with ' \|'"):
        read_audio(f"cat {wav}")
    assert read_audio(f"cat {wav} |")[1] == 16000


# ------------------------------------------------------------------------------ back-end files


def test_damaged_backend_never_writes_nan_scores(tmp_path):
    from voxadapt.backend import kaldi_format as kf
    from voxadapt.backend.plda import Plda
    from voxadapt.backend.scoring import Backend, Embeddings, score_trials
    from voxadapt.data.trials import Trial

    rng = np.random.default_rng(0)
    good = Backend(np.zeros(4), np.eye(4), Plda(np.zeros(4), np.eye(4), np.ones(4)))
    good.save(tmp_path / "b")
    kf.write_plda(tmp_path / "b" / "plda", np.zeros(4), np.eye(4), np.array([1.0, np.nan, 1.0, 1.0]))
    with pytest.raises(VoxadaptError, match=r"b/plda: holds NaN or Inf; the file is corrupt: re-run stage 6"):
        Backend.load(tmp_path / "b")
    kf.write_plda(tmp_path / "b" / "plda", np.zeros(4), np.eye(4), -np.ones(4))
    with pytest.raises(VoxadaptError, match="negative between-class variances"):
        Backend.load(tmp_path / "b")
    # Built in memory (not through load): the scorer itself refuses to hand out NaN.
    broken = Backend(np.full(4, np.nan))
    emb = Embeddings(["a", "b"], rng.normal(size=(2, 4)).astype(np.float32))
    with pytest.raises(VoxadaptError, match="1 of 1 cosine scores are NaN or Inf"):
        score_trials(broken, emb, [Trial("a", "b", True)], ["cosine"])


# ------------------------------------------------------------------------------ the voxadapt command


def voxadapt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxadapt", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def wav(wavs):
    return wavs[0]


def damaged(package: Path, tmp_path: Path, name: str, content: bytes) -> Path:
    copy = tmp_path / "pkg"
    shutil.copytree(package, copy)
    (copy / name).write_bytes(content)
    return copy


@pytest.mark.slow
@pytest.mark.parametrize("name, content, fragments", [
    ("model.safetensors", None, ["model.safetensors: not a readable safetensors file", "re-package"]),  # truncated
    ("model.safetensors", b"\x93\x00" * 300, ["model.safetensors: not a readable safetensors file"]),
    ("voxadapt-model.json", b'{"format": "voxadapt-package-1",', ["voxadapt-model.json:1: not valid JSON"]),
    ("voxadapt-model.json", b'{"format": "voxadapt-package-1"}', ["voxadapt-model.json: 'name' is missing"]),
    ("backbone.json", b"[1, 2]", ["backbone.json: not an SSL model config", "re-package"]),
    ("calibration.json", b'{"cosine": {"bias": 1}}', ["calibration.json: not a calibration file"]),
    ("config.yaml", b"model: [", ["config.yaml", "not valid YAML"]),
])
def test_damaged_package(package, wav, tmp_path, name, content, fragments):
    if content is None:
        content = (package / name).read_bytes()[:1000]
    pkg = damaged(package, tmp_path, name, content)
    assert_clean_error(voxadapt("embed", str(pkg), wav), *fragments)


@pytest.mark.slow
def test_cli_option_faults(package, wav, tmp_path):
    mono = write_wav(tmp_path / "mono.wav", 2.0)
    stereo = write_wav(tmp_path / "stereo.wav", 2.0, channels=2)
    (tmp_path / "list.scp").write_text(f"a {wav}\n")
    (tmp_path / "dir").mkdir()
    cases = [
        (["verify", str(package), wav, wav, "--device", "cuda"], ["no usable CUDA GPU", "use cpu"]),
        (["verify", str(package), wav, wav, "--p-target", "0"], ["--p-target: 0 is not strictly between 0 and 1"]),
        (["verify", str(package), wav, wav, "--p-target", "1.5"], ["--p-target: 1.5 is not strictly between"]),
        (["verify", str(package), wav, wav, "--p-target", "abc"], ["--p-target: 'abc' is not a number"]),
        (["verify", str(package), str(stereo), str(mono), "--channel", "1"],
         [f"{mono}: no channel 1 (it has 1: 0)"]),
        (["embed", str(package), wav, "--channel", "-1"], ["--channel: '-1' is not a channel number"]),
        (["embed", str(package), wav, "--out", "foo.ark"], ["--out: 'foo.ark' is not a Kaldi wspecifier",
                                                           "ark,scp:x.ark,x.scp"]),
        (["embed", str(package), wav, "--out", "ark,scp:x.ark"], ["ark,scp needs two files"]),
        (["embed", str(package), wav, "--batch-size", "-5"], ["--batch-size: -5 must be above 0"]),
        (["embed", str(package), wav, "--wav-scp", str(tmp_path / "list.scp")],
         ["give audio files or directories, --list or --wav-scp, not several"]),
        (["verify", str(package), str(tmp_path / "dir"), wav], [f"{tmp_path / 'dir'}: is a directory"]),
        (["embed", str(package), str(tmp_path / "dir")], [f"{tmp_path / 'dir'}: no .wav/.flac/.ogg/.mp3 files"]),
        (["embed", str(mono), wav], [f"{mono}: is a file, not a packaged model directory"]),
        (["export-onnx", str(package), str(tmp_path / "dir")], [f"{tmp_path / 'dir'}: is a directory",
                                                                "model.onnx"]),
        (["export-onnx", str(package), str(tmp_path / "no" / "m.onnx")], ["directory not found"]),
    ]
    for args, fragments in cases:
        assert_clean_error(voxadapt(*args), *fragments)
    assert not list(tmp_path.glob("*.ark")) and not list((tmp_path / "dir").iterdir())


@pytest.mark.slow
def test_api_waveform_faults(package):
    import voxadapt

    model = voxadapt.load(package)
    sr = model.sample_rate
    speech = np.random.default_rng(0).normal(0, 0.1, sr).astype(np.float32)
    for x, message in [
        (np.zeros(0, dtype=np.float32), "only 0.000 s of audio"),
        (speech[:10], "only 0.001 s of audio"),
        (np.full(sr, np.nan, dtype=np.float32), "NaN or Inf"),
        (np.zeros(sr, dtype=np.float32), "silent"),
        (np.full(sr, 0.3, dtype=np.float32), "silent"),  # a DC offset carries no voice
        (speech.reshape(2, -1), "mono waveform of shape"),
        ({"a": 1}, "cannot use a dict as audio"),
    ]:
        with pytest.raises(VoxadaptError, match=message):
            model.embed(x, sample_rate=sr)
    with pytest.raises(VoxadaptError, match="nothing to embed"):
        model.embed_many([])
    with pytest.raises(VoxadaptError, match="p_target 0 is not a probability"):
        model.verify(speech, speech, p_target=0, sample_rate=sr)
    # A plain list of samples is a waveform too.
    np.testing.assert_allclose(model.embed(speech.tolist(), sample_rate=sr), model.embed(speech, sample_rate=sr), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ stages


@pytest.mark.slow
def test_dangling_model_link_at_stage_8(micro_pipeline, tmp_path):
    from helpers import run_stages

    shutil.copytree(micro_pipeline, tmp_path / "p", symlinks=True)
    exp = tmp_path / "p" / "exp" / "mhfa_tiny"
    shutil.rmtree(exp / "package")
    (exp / "model").unlink()
    (exp / "model").symlink_to("lm/gone")
    proc = run_stages(tmp_path / "p", 8, 8)
    assert_clean_error(proc, f"{exp / 'model'}: points to lm/gone, which does not exist", "re-run stage 4")
    assert not (exp / "package").exists()


@pytest.mark.slow
def test_scoring_that_fails_midway_leaves_no_list_behind(micro_pipeline, tmp_path, monkeypatch):
    from helpers import PIPELINE

    from voxadapt.config import load_config
    from voxadapt.layout import DataLayout, ExpLayout
    from voxadapt.report import plots
    from voxadapt.stages import score

    shutil.copytree(micro_pipeline, tmp_path / "p", symlinks=True)
    exp = tmp_path / "p" / "exp" / "mhfa_tiny"
    shutil.rmtree(exp / "scores")
    (exp / ".done" / "stage7_score.json").unlink()

    def fail(*_args, **_kwargs):
        raise OSError(28, "No space left on device", "histogram.png")

    monkeypatch.setattr(plots, "save_figure", fail)  # the last file of the list's directory
    with pytest.raises(OSError):
        score.run(load_config(None, PIPELINE), DataLayout(tmp_path / "p" / "data"), ExpLayout(exp))
    assert not (exp / "scores" / "test").exists() and not (exp / ".done" / "stage7_score.json").exists()


@pytest.mark.slow
def test_asnorm_top_n_at_the_cohort_size_is_warned_of(micro_pipeline, tmp_path, caplog):
    """Top-N as large as the cohort turns AS-norm into S-norm: stage 7 scores, and says so."""
    from helpers import PIPELINE

    from voxadapt.backend.scoring import Backend
    from voxadapt.config import load_config
    from voxadapt.layout import DataLayout, ExpLayout
    from voxadapt.stages import score

    shutil.copytree(micro_pipeline, tmp_path / "p", symlinks=True)
    exp = ExpLayout(tmp_path / "p" / "exp" / "mhfa_tiny")
    cohort = len(Backend.load(exp.backend).cohort)

    def rescore(top_n: int) -> list[str]:
        shutil.rmtree(exp.scores_dir)
        exp.marker(7, "score").unlink()
        caplog.clear()
        score.run(load_config(None, PIPELINE + [f"scoring.asnorm_top_n={top_n}"]), DataLayout(tmp_path / "p" / "data"), exp)
        assert exp.results_json.is_file()
        return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]

    assert rescore(cohort - 1) == []
    warned = rescore(cohort)
    assert len(warned) == 1 and f"asnorm_top_n {cohort} is not below the cohort's {cohort} x-vectors" in warned[0]


def test_kaldi_import_failure_names_the_users_file_and_leaves_nothing(tmp_path):
    train = make_data_dir(tmp_path / "mytrain", {"a": 2})
    test = make_data_dir(tmp_path / "mytest", {"c": 2})
    (tmp_path / "trials").write_text("c-000 c-001 target\n")
    wav_scp = (test / "wav.scp").read_text().splitlines()
    # An id with a space in wav.scp: the rest of the line is taken as a path that does not exist.
    (test / "wav.scp").write_text(wav_scp[0] + "\n" + wav_scp[1].replace(" ", " x ", 1) + "\n")
    over = ["data.corpus=kaldi", f"data.kaldi.train_dir={train}", f"data.kaldi.test_dir={test}",
            f"data.kaldi.trials={tmp_path / 'trials'}"]
    proc = run_step("data", *set_args(over), "--data", str(tmp_path / "data"))
    assert_clean_error(proc, f"{test}/wav.scp:2", "audio file not found")
    assert not (tmp_path / "data" / "train").exists() and not (tmp_path / "data" / "test").exists()


# ------------------------------------------------------------------------------ portability


def test_model_digest_is_of_content_not_path_or_time(tmp_path):
    import os

    from voxadapt.stages.extract import model_digest

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.safetensors").write_bytes(b"weights")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    os.utime(tmp_path / "b" / "model.safetensors", (1, 1))
    assert model_digest(tmp_path / "a") == model_digest(tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").write_bytes(b"other weights")
    assert model_digest(tmp_path / "a") != model_digest(tmp_path / "b")

