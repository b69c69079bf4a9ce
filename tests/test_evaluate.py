"""Scoring your own data with a trained model: local/evaluate.sh, calibrated decisions, the
`voxadapt` command's inputs and outputs (directories, lists, pipes, JSON, exit codes, cohorts)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, assert_clean_error, hold_lock, kill_group, run_py, run_sh, venv_env

from voxadapt.backend.calibration import Calibration

# ------------------------------------------------------------------------------ calibration


def test_duration_terms_never_reverse_a_score():
    """Longer recordings separate worse here: the constrained fit gives them no weight rather than
    a negative one, so no duration turns a high score into evidence against."""
    rng = np.random.default_rng(0)
    n = 4000
    labels = rng.random(n) < 0.5
    shorter = np.exp(rng.uniform(np.log(1), np.log(20), n))
    spread = np.where(shorter > 5, 0.3, 0.1)
    scores = np.where(labels, 0.6, 0.2) + rng.normal(0, 1, n) * spread
    durations = np.stack([shorter, shorter * 2], 1)
    cal = Calibration.fit(scores, labels, durations)
    a, c = cal.weights
    assert a > 0 and c == 0.0
    grid = np.linspace(-1, 1, 50)
    for d in (0.2, 3.0, 600.0):
        llr = cal.llr(grid, np.full((50, 2), d))
        assert np.all(np.diff(llr) >= 0), d


def test_duration_terms_add_confidence_when_longer_is_better():
    rng = np.random.default_rng(1)
    n = 4000
    labels = rng.random(n) < 0.5
    shorter = np.exp(rng.uniform(np.log(1), np.log(20), n))
    # Scores centred on 0 as cosine and PLDA scores are: the evidence of a score scales with duration.
    scores = np.where(labels, 0.4, -0.4) + rng.normal(0, 1, n) * np.where(shorter > 5, 0.1, 0.4)
    cal = Calibration.fit(scores, labels, np.stack([shorter, shorter], 1))
    assert cal.weights[1] > 0
    high = cal.llr(np.array([0.5, 0.5]), np.array([[1.0, 1.0], [20.0, 20.0]]))
    low = cal.llr(np.array([-0.5, -0.5]), np.array([[1.0, 1.0], [20.0, 20.0]]))
    assert high[1] > high[0] > 0 > low[0] > low[1]  # longer: more confident, in both directions


def test_calibration_files_of_the_earlier_linear_form_still_load(tmp_path):
    from voxadapt.backend.calibration import load_calibrations

    (tmp_path / "c.json").write_text(json.dumps({"cosine": {"weights": [10.0, -0.5, 0.2], "bias": -3.0,
                                                            "quality": True}}))
    cal = load_calibrations(tmp_path / "c.json")["cosine"]
    got = cal.llr(np.array([0.5]), np.array([[2.0, 4.0]]))
    assert got[0] == pytest.approx(10 * 0.5 - 0.5 * np.log(2) + 0.2 * np.log(4) - 3.0)


# ------------------------------------------------------------------------------ the command


def voxadapt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxadapt", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow
def test_a_file_against_itself_is_accepted_by_every_method(package, wavs):
    import voxadapt

    for method in voxadapt.load(package).manifest["methods"]:
        model = voxadapt.load(package, method=method)
        same, other = model.verify(wavs[0], wavs[0]), model.verify(wavs[0], wavs[1])
        assert same.accept and same.p_target == 0.5 and same.llr >= other.llr, method
    # Identical long recordings are at least as strong evidence as identical short ones.
    import soundfile as sf

    x, sr = sf.read(wavs[0], dtype="float32")
    long = np.tile(x, 60 * sr // len(x) + 1)[: 60 * sr]
    model = voxadapt.load(package)
    assert model.verify(long, long, sample_rate=sr).llr >= model.verify(x, x, sample_rate=sr).llr - 1e-9


@pytest.mark.slow
def test_verify_json_and_exit_code(package, wavs):
    proc = voxadapt("verify", str(package), wavs[0], wavs[0], "--json", "--exit-code")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["accept"] is True and result["a"] == wavs[0] and result["threshold"] == 0.0
    proc = voxadapt("verify", str(package), wavs[0], wavs[1], "--exit-code", "--p-target", "0.000001")
    assert proc.returncode == 3 and "reject" in proc.stdout, proc.stderr  # nothing passes such a prior here


@pytest.mark.slow
def test_embed_directories_lists_and_piped_wav_scp(package, wavs, tmp_path):
    import kaldiio

    import voxadapt as api

    audio = tmp_path / "audio"
    (audio / "sub").mkdir(parents=True)
    shutil.copy(wavs[0], audio / "a.wav")
    shutil.copy(wavs[1], audio / "sub" / "b.WAV")
    (audio / "notes.txt").write_text("not audio")
    proc = voxadapt("embed", str(package), str(audio), "--out", f"ark,t:{tmp_path / 'd.txt'}")
    assert proc.returncode == 0, proc.stderr
    got = dict(kaldiio.load_ark(str(tmp_path / "d.txt")))
    assert sorted(got) == [str(audio / "a.wav"), str(audio / "sub" / "b.WAV")]
    (tmp_path / "list.txt").write_text(f"{wavs[0]}\n{wavs[1]}\n")
    assert voxadapt("embed", str(package), "--list", str(tmp_path / "list.txt")).stdout.count("[") == 2
    (tmp_path / "wav.scp").write_text(f"p cat {wavs[0]} |\nq {wavs[1]}\n")
    out = f"ark,scp:{tmp_path / 'e.ark'},{tmp_path / 'e.scp'}"
    assert voxadapt("embed", str(package), "--wav-scp", str(tmp_path / "wav.scp"), "--out", out).returncode == 0
    vectors = dict(kaldiio.load_scp(str(tmp_path / "e.scp")))
    np.testing.assert_allclose(vectors["p"], api.load(package).embed(wavs[0]), atol=1e-6)
    proc = subprocess.run([sys.executable, "-m", "voxadapt", "embed", str(package), "--wav-scp",
                           str(tmp_path / "wav.scp")], capture_output=True, text=True, cwd=ROOT,
                          env={**venv_env(), "PATH": "/usr/bin:/bin", "VOXADAPT_NO_PIPES": "1"})
    assert_clean_error(proc, "wav.scp pipes are disabled")
    assert_clean_error(voxadapt("embed", str(package), str(tmp_path / "list.txt"), "--list", "x"), "not several")
    (audio / "a.wav").unlink()
    (audio / "sub" / "b.WAV").unlink()
    assert_clean_error(voxadapt("embed", str(package), str(audio)), "no .wav/.flac/.ogg/.mp3 files")


@pytest.mark.slow
def test_score_writes_llrs_with_durations_a_cohort_and_a_json_summary(package, micro_pipeline, tmp_path):
    from voxadapt.data.kaldi_dir import DataDir

    test = micro_pipeline / "data" / "test"
    scp = micro_pipeline / "exp" / "mhfa_tiny" / "embeddings" / "test" / "xvector.scp"
    durations = DataDir.load(test).utt2dur()
    (tmp_path / "utt2dur").write_text("".join(f"{u} {d}\n" for u, d in durations.items()))
    args = ["score", str(package), "--trials", str(test / "trials"), "--scp", str(scp), "--method", "asnorm"]
    proc = voxadapt(*args, "--out", str(tmp_path / "s"), "--utt2dur", str(tmp_path / "utt2dur"), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["llr"] and 0 < summary["accepted"]["0.5"]["targets"] <= 1 and "act_dcf" in summary
    fields = (tmp_path / "s").read_text().splitlines()[0].split()
    assert len(fields) == 4  # enroll test score llr
    # Stage 7's LLRs for the same list and method: the package's calibration is the experiment's.
    stage7 = (micro_pipeline / "exp" / "mhfa_tiny" / "scores" / "test" / "asnorm.llr").read_text().splitlines()
    assert float(stage7[0].split()[2]) == pytest.approx(float(fields[3]), abs=1e-3)
    # Another cohort changes AS-norm's scores.
    cohort = micro_pipeline / "exp" / "mhfa_tiny" / "embeddings" / "dev" / "xvector.scp"
    assert voxadapt(*args, "--out", str(tmp_path / "c"), "--cohort-scp", str(cohort)).returncode == 0
    assert (tmp_path / "c").read_text() != (tmp_path / "s").read_text().replace(f" {fields[3]}\n", "\n")
    assert_clean_error(voxadapt(*args, "--json"), "--json prints a summary on stdout; give --out")
    (tmp_path / "short").write_text("x 1.0\n")
    assert_clean_error(voxadapt(*args, "--out", str(tmp_path / "s2"), "--utt2dur", str(tmp_path / "short")),
                       "utt2dur", "no duration for")


# ------------------------------------------------------------------------------ local/evaluate.sh


@pytest.mark.slow
def test_evaluate_sh_scores_a_piped_segmented_copy_like_stage_7(micro_pipeline, tmp_path):
    """A user's dir: the test set as one long recording per speaker through a pipe, cut by segments."""
    import soundfile as sf

    from voxadapt.data.kaldi_dir import DataDir

    exp = micro_pipeline / "exp" / "mhfa_tiny"
    src = DataDir.load(micro_pipeline / "data" / "test")
    mine = tmp_path / "mytest"
    (mine / "audio").mkdir(parents=True)
    wav, seg = [], []
    for spk, utts in src.spk2utt.items():
        # 0.1 s of silence between utterances, as in a real recording.
        pieces = [sf.read(src.wav_scp[u], dtype="int16")[0] for u in utts]
        gaps = [np.zeros(1600, dtype=np.int16) for _ in pieces]
        sf.write(mine / "audio" / f"{spk}.wav", np.concatenate([x for pg in zip(pieces, gaps) for x in pg]), 16000,
                 subtype="PCM_16")
        wav.append(f"{spk}-rec cat {mine / 'audio' / f'{spk}.wav'} |")
        start = 0
        for u, p, g in zip(utts, pieces, gaps):
            seg.append(f"{u} {spk}-rec {start / 16000} {(start + len(p)) / 16000}")
            start += len(p) + len(g)
    (mine / "wav.scp").write_text("\n".join(sorted(wav)) + "\n")
    (mine / "segments").write_text("\n".join(sorted(seg)) + "\n")
    (mine / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in sorted(src.utt2spk.items())))
    recipe_data = {p: p.stat().st_mtime_ns for p in (micro_pipeline / "data").rglob("*") if p.is_file()}

    out = tmp_path / "eval"
    proc = run_sh("local/evaluate.sh", "--model", str(exp), "--data_dir", str(mine), "--trials",
                  str(micro_pipeline / "data" / "test" / "trials"), "--out", str(out), env=venv_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| mytest | cosine |" in proc.stdout
    ours = json.loads((out / "results.json").read_text())["mytest"]
    stage7 = json.loads((exp / "results.json").read_text())["test"]
    for method in stage7:
        # The same samples, cut from longer recordings through a pipe: the same scores.
        assert ours[method]["eer"] == pytest.approx(stage7[method]["eer"], abs=1e-9), method
    assert {p: p.stat().st_mtime_ns for p in (micro_pipeline / "data").rglob("*") if p.is_file()} == recipe_data
    again = run_sh("local/evaluate.sh", "--model", str(exp), "--data_dir", str(mine), "--trials",
                   str(micro_pipeline / "data" / "test" / "trials"), "--out", str(out), env=venv_env())
    assert "already prepared; nothing to do" in again.stderr and "already complete; nothing to do" in again.stderr
    # Scoring is redone, and says so and with which cohort (a re-run with --cohort_scp is not silent).
    assert "scored before; its scores are replaced" in again.stderr
    assert "AS-norm cohort: the model's training-speaker means" in again.stderr

    # A package works the same way, with a cohort of the evaluation domain for AS-norm.
    proc = run_sh("local/evaluate.sh", "--model", str(exp / "package"), "--data_dir", str(mine), "--trials",
                  str(micro_pipeline / "data" / "test" / "trials"), "--out", str(tmp_path / "pkg"),
                  "--cohort_scp", str(out / "embeddings" / "xvector.scp"), env=venv_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"AS-norm cohort: {out / 'embeddings' / 'xvector.scp'}" in proc.stderr
    pkg = json.loads((tmp_path / "pkg" / "results.json").read_text())["mytest"]
    assert pkg["cosine"]["eer"] == pytest.approx(ours["cosine"]["eer"], abs=1e-9)
    scores = [(d / "scores" / "mytest" / "asnorm.score").read_text() for d in (out, tmp_path / "pkg")]
    assert scores[0] != scores[1]  # another cohort, other AS-norm scores


@pytest.mark.parametrize("args, fragments", [
    ([], ["give --model, --data_dir and --trials"]),
    (["--model", "/nonexistent", "--data_dir", "/tmp", "--trials", "/etc/hostname"], ["--model /nonexistent: not a directory"]),
    (["--model", "/tmp", "--data_dir", "/tmp", "--trials", "/etc/hostname"], ["neither an experiment", "nor a package"]),
    (["--model", "/tmp", "--data_dir", "/nonexistent", "--trials", "/etc/hostname"], ["--data_dir /nonexistent: not a directory"]),
    (["--model", "/tmp", "--data_dir", "/tmp", "--trials", "/nonexistent"], ["--trials /nonexistent: file not found"]),
    (["--model", "/tmp", "--data_dir", "/tmp", "--trials", "/etc/hostname", "--nj", "0"], ["--nj '0' must be"]),
    (["--model", "/tmp", "--data_dir", "/tmp", "--trials", "/etc/hostname", "--stage", "3"], ["must be 0, 1 or 2"]),
])
def test_evaluate_sh_bad_options(tmp_path, args, fragments):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [str(empty) if a == "/tmp" else a for a in args]
    assert_clean_error(run_sh("local/evaluate.sh", *args, env=venv_env()), *fragments)


def test_a_second_evaluation_into_one_directory_stops(micro_pipeline, tmp_path):
    out = tmp_path / "eval"
    holder = hold_lock(out / ".lock", 120)
    try:
        proc = run_sh("local/evaluate.sh", "--model", str(micro_pipeline / "exp" / "mhfa_tiny"), "--data_dir",
                      str(micro_pipeline / "data" / "test"), "--trials", str(micro_pipeline / "data" / "test" / "trials"),
                      "--out", str(out), env=venv_env())
    finally:
        kill_group(holder)
    assert_clean_error(proc, f"another evaluation is using {out}", "give this one another --out")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_evaluate_sh_is_told_the_model_dir_config_and_default_output_by_python(tmp_path):
    """One resolver decides "experiment or package" for the shell too, and names the output per model:
    an experiment's evaluations go to <exp>/eval/<name>, a package's to <package>_eval/<name>, so an
    experiment and its own package never write into one directory."""
    exp = tmp_path / "exp" / "sys"
    pkg = exp / "package"
    for f in (exp / "model" / "config.yaml", exp / "backend" / "mean.vec", exp / "backend" / "calibration.json",
              pkg / "voxadapt-model.json", pkg / "config.yaml", pkg / "backend" / "mean.vec", pkg / "calibration.json"):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("")
    for model, expected in ((exp, (exp / "model", exp / "model" / "config.yaml", exp / "eval" / "mine")),
                            (pkg, (pkg, pkg / "config.yaml", exp / "package_eval" / "mine"))):
        proc = run_py("evaluate.py", "paths", "--model", str(model), "--name", "mine")
        assert proc.returncode == 0, proc.stderr
        shell = subprocess.run(["bash", "-c", f'{proc.stdout}\necho "$model_dir|$config|$out|$out_xvectors"'],
                               capture_output=True, text=True, check=True)
        model_dir, config, out = expected
        assert shell.stdout.strip() == f"{model_dir}|{config}|{out}|{out / 'embeddings'}"


def test_evaluate_sh_takes_paths_relative_to_the_callers_directory(micro_pipeline, tmp_path):
    """--data_dir, --trials, --model and --out as a user types them in their own directory."""
    work = tmp_path / "work"
    shutil.copytree(micro_pipeline / "data" / "test", work / "mydata", ignore=shutil.ignore_patterns("split*"))
    exp = os.path.relpath(micro_pipeline / "exp" / "mhfa_tiny", work)
    proc = subprocess.run(["bash", str(ROOT / "local" / "evaluate.sh"), "--model", exp, "--data_dir", "mydata",
                           "--trials", "mydata/trials", "--out", "out", "--stop_stage", "0"],
                          cwd=work, env=venv_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "out" / "data" / "trials").is_file()


def test_evaluate_sh_checks_the_trial_list_before_any_audio(micro_pipeline, tmp_path):
    mine = tmp_path / "mine"
    shutil.copytree(micro_pipeline / "data" / "test", mine, ignore=shutil.ignore_patterns("split*"))
    (mine / "wav.scp").write_text("".join(f"{line.split()[0]} /nonexistent.wav\n"
                                          for line in (mine / "wav.scp").read_text().splitlines()))
    (tmp_path / "trials").write_text("nobody else target\n")
    proc = run_sh("local/evaluate.sh", "--model", str(micro_pipeline / "exp" / "mhfa_tiny"), "--data_dir", str(mine),
                  "--trials", str(tmp_path / "trials"), "--out", str(tmp_path / "out"), env=venv_env())
    assert_clean_error(proc, "trials", "are unknown", "nobody")
    assert "nonexistent.wav" not in proc.stderr


def test_run_sh_points_new_test_sets_to_evaluate_sh(tmp_path):
    proc = run_sh("run.sh", "--config", "conf/mhfa_kaldi.yaml", "--train_dir", "/x", "--test_dir", "/y",
                  "--trials", "/z", "--stage", "5", "--exp", str(tmp_path / "exp"), env=venv_env())
    assert_clean_error(proc, "--train_dir is read by stage 0 only", "local/evaluate.sh")
    proc = run_sh("run.sh", "--corpus", "kaldi", "--stage", "6", "--exp", str(tmp_path / "exp"), env=venv_env())
    assert_clean_error(proc, "scoring.calibration_set 'dev' is not a data set of corpus 'kaldi'", "conf/mhfa_kaldi.yaml")


# ------------------------------------------------------------------------------ input conditioning


def test_energy_vad_finds_speech_between_long_silences():
    from voxadapt.data.conditioning import speech_mask

    rng = np.random.default_rng(0)
    sr = 16000
    speech = (rng.normal(0, 0.05, 2 * sr) * np.sin(np.linspace(0, 40 * np.pi, 2 * sr)) ** 2).astype(np.float32)
    floor = rng.normal(0, 10 ** (-60 / 20), 22 * sr).astype(np.float32)  # a -60 dBFS noise floor
    x = floor.copy()
    x[10 * sr:12 * sr] += speech
    mask = speech_mask(x, sr)
    assert mask[10 * sr + 1600:12 * sr - 1600].mean() > 0.9  # the speech is kept
    assert mask[: 9 * sr].mean() == 0 and mask[13 * sr:].mean() == 0  # the silences are not


@pytest.mark.slow
def test_embeddings_do_not_depend_on_level_or_surrounding_silence(package, wavs):
    import soundfile as sf

    import voxadapt

    x, sr = sf.read(wavs[0], dtype="float32")

    def cosine(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    model = voxadapt.load(package)
    quiet = (np.round(x * 10 ** (-30 / 20) * 32767) / 32767).astype(np.float32)  # -30 dB in a 16-bit file
    assert cosine(model.embed(x, sample_rate=sr), model.embed(quiet, sample_rate=sr)) >= 0.99
    with_vad = voxadapt.load(package, vad=True)
    floor = np.random.default_rng(0).normal(0, 10 ** (-60 / 20), len(x) + 20 * sr).astype(np.float32)
    padded = floor.copy()
    padded[10 * sr:10 * sr + len(x)] += x  # 10 s of near-silence on each side
    assert cosine(with_vad.embed(x, sample_rate=sr), with_vad.embed(padded, sample_rate=sr)) >= 0.98


@pytest.mark.slow
def test_cohort_choice_in_score_trials_and_stage_7(micro_pipeline, tmp_path):
    from helpers import PIPELINE, run_py

    from voxadapt.config import load_config
    from voxadapt.layout import DataLayout, ExpLayout
    from voxadapt.stages import score

    exp = micro_pipeline / "exp" / "mhfa_tiny"
    cohort = exp / "embeddings" / "dev" / "xvector.scp"
    common = ["--trials", str(micro_pipeline / "data" / "test" / "trials"), "--scp",
              str(exp / "embeddings" / "test" / "xvector.scp"), "--backend", str(exp / "backend"), "--method", "asnorm",
              "--top-n", "5"]  # scoring.asnorm_top_n of the pipeline
    assert run_py("score_trials.py", *common, "--out", str(tmp_path / "a")).returncode == 0
    assert run_py("score_trials.py", *common, "--cohort-scp", str(cohort), "--out", str(tmp_path / "b")).returncode == 0
    assert (tmp_path / "a").read_text() == (exp / "scores" / "test" / "asnorm.score").read_text()
    assert (tmp_path / "b").read_text() != (tmp_path / "a").read_text()
    # Stage 7 with scoring.asnorm_cohort: the same scores as score_trials.py with that cohort.
    shutil.copytree(micro_pipeline, tmp_path / "p", symlinks=True)
    copy = tmp_path / "p" / "exp" / "mhfa_tiny"
    shutil.rmtree(copy / "scores")
    (copy / ".done" / "stage7_score.json").unlink()
    cfg = load_config(None, PIPELINE + [f"scoring.asnorm_cohort={cohort}"])
    score.run(cfg, DataLayout(micro_pipeline / "data"), ExpLayout(copy))
    assert (copy / "scores" / "test" / "asnorm.score").read_text() == (tmp_path / "b").read_text()
    assert json.loads((copy / ".done" / "stage7_score.json").read_text())["cohort"]  # its digest is recorded
