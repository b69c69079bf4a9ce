from __future__ import annotations

import pytest
from helpers import assert_clean_error, make_data_dir, run_step, set_args

from voxadapt.config import load_config
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.layout import DataLayout
from voxadapt.stages import data as data_stage


def test_import_user_dirs_with_voxceleb_style_trials(tmp_path):
    train = make_data_dir(tmp_path / "mytrain", {"a": 2, "b": 2})
    test = make_data_dir(tmp_path / "mytest", {"c": 2, "d": 1})
    (train / "spk2utt").unlink()  # regenerated on import
    (tmp_path / "trials").write_text("c-000 c-001 target\nc-000 d-000 nontarget\n")
    cfg = load_config(None, ["data.corpus=kaldi", f"data.kaldi.train_dir={train}", f"data.kaldi.test_dir={test}",
                             f"data.kaldi.trials={tmp_path / 'trials'}"])
    data_stage.run(cfg, DataLayout(tmp_path / "data"), nj=1)
    assert DataDir.load(tmp_path / "data" / "train").spk2utt == {"a": ["a-000", "a-001"], "b": ["b-000", "b-001"]}
    assert (tmp_path / "data" / "test" / "trials").read_text() == (tmp_path / "trials").read_text()
    assert (tmp_path / "data" / "test" / "reco2dur").is_file()


def test_import_keeps_the_enrolment_map_the_trials_name(tmp_path):
    train = make_data_dir(tmp_path / "mytrain", {"a": 2, "b": 2})
    test = make_data_dir(tmp_path / "mytest", {"c": 3, "d": 1})
    (test / "enroll.map").write_text("c-enr c-000 c-001\n")
    (tmp_path / "trials").write_text("c-enr c-002 target\nc-enr d-000 nontarget\n")
    over = ["data.corpus=kaldi", f"data.kaldi.train_dir={train}", f"data.kaldi.test_dir={test}",
            f"data.kaldi.trials={tmp_path / 'trials'}"]
    data_stage.run(load_config(None, over), DataLayout(tmp_path / "data"), nj=1)
    assert (tmp_path / "data" / "test" / "enroll.map").read_text() == "c-enr c-000 c-001\n"
    (test / "enroll.map").write_text("c-enr c-000 zzz\n")
    proc = run_step("data", *set_args(over), "--data", str(tmp_path / "data2"))
    assert_clean_error(proc, f"{test}/enroll.map:1", "'zzz'", "not in the data dir")
    assert not (tmp_path / "data2" / "test").exists()


def test_import_errors_name_the_users_file(tmp_path):
    train = make_data_dir(tmp_path / "mytrain", {"a": 2})
    test = make_data_dir(tmp_path / "mytest", {"c": 2})
    (tmp_path / "trials").write_text("c-000 zzz target\n")
    over = ["data.corpus=kaldi", f"data.kaldi.train_dir={train}", f"data.kaldi.test_dir={test}",
            f"data.kaldi.trials={tmp_path / 'trials'}"]
    proc = run_step("data", *set_args(over), "--data", str(tmp_path / "data"))
    assert_clean_error(proc, str(tmp_path / "trials"), "unknown: zzz")
    (train / "utt2spk").write_text("a-001 a\na-000 a\n")
    proc = run_step("data", *set_args(over), "--data", str(tmp_path / "data"))
    assert_clean_error(proc, f"{train}/utt2spk:2: not sorted")
    proc = run_step("data", "--set", "data.corpus=kaldi", "--data", str(tmp_path / "data"))
    assert_clean_error(proc, "--corpus kaldi needs --train_dir")


def segmented_dir(root, speakers, seconds=6.0):
    """Kaldi dir whose utterances are cut from one long recording per speaker by `segments`,
    the last one with Kaldi's end time -1 (to the end of the recording)."""
    from helpers import write_wav

    root.mkdir(parents=True)
    wav, seg, utt2spk = [], [], []
    for n, spk in enumerate(speakers):
        path = write_wav(root / "wav" / f"{spk}.wav", seconds, seed=n)
        wav.append(f"{spk}-rec cat {path} |" if n % 2 else f"{spk}-rec {path}")  # pipes and plain paths
        bounds = [(0.0, 2.5), (2.5, 4.0), (4.0, -1)]
        for i, (start, end) in enumerate(bounds):
            seg.append(f"{spk}-{i:03d} {spk}-rec {start} {end}")
            utt2spk.append(f"{spk}-{i:03d} {spk}")
    for name, lines in (("wav.scp", wav), ("segments", seg), ("utt2spk", utt2spk)):
        (root / name).write_text("\n".join(sorted(lines)) + "\n")
    return root


def test_segmented_dirs_without_text_through_manifests_and_training_examples(tmp_path):
    """Kaldi speaker dirs rarely have `text`; lhotse's import wants one with segments."""
    import numpy as np
    import soundfile as sf
    from helpers import run_sh, venv_env, write_config

    from voxadapt.data.examples import ExampleTable
    from voxadapt.data.manifests import load_cuts
    from voxadapt.layout import DataLayout
    from voxadapt.stages import augment

    train = segmented_dir(tmp_path / "mytrain", ["a", "b"])
    test = segmented_dir(tmp_path / "mytest", ["c", "d"])
    (tmp_path / "trials").write_text("c-000 c-001 target\nc-000 d-002 nontarget\n")
    over = ["data.corpus=kaldi", f"data.kaldi.train_dir={train}", f"data.kaldi.test_dir={test}",
            f"data.kaldi.trials={tmp_path / 'trials'}", "augment.speed_perturb=false"]
    write_config(tmp_path / "seg.yaml", over)
    proc = run_sh("run.sh", "--config", str(tmp_path / "seg.yaml"), "--stop_stage", "1", "--data",
                  str(tmp_path / "data"), "--exp", str(tmp_path / "exp"), env=venv_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = DataLayout(tmp_path / "data")
    cuts = {c.id: c for c in load_cuts(data.cuts("train"))}
    assert sorted(cuts) == ["a-000", "a-001", "a-002", "b-000", "b-001", "b-002"]
    assert (cuts["a-001"].start, cuts["a-001"].duration) == (2.5, 1.5)
    assert cuts["b-002"].duration == 2.0 and cuts["b-002"].supervisions[0].speaker == "b"  # end -1: to the end
    # Training reads each example from inside its recording.
    cfg = load_config(tmp_path / "seg.yaml")
    augment.run(cfg, data)
    table = ExampleTable.from_manifest(data.cuts("train"), 16000)
    sources = [table.audio_sources(k)[0] for k in range(len(table))]
    for spk, piped in (("a", False), ("b", True)):
        i = next(k for k, src in enumerate(sources) if f"{spk}.wav" in src.source)
        assert (sources[i].type == "command") == piped, sources[i]
        i += int(np.argmax(table.start[i:i + 3] == 2.5))
        crop = table.crop(i, 8000, np.random.default_rng(0))
        whole, _ = sf.read(train / "wav" / f"{spk}.wav", dtype="float32")
        segment = whole[40000:64000]  # 2.5 s to 4.0 s
        assert any(np.array_equal(segment[p:p + 8000], crop) for p in range(len(segment) - 8000 + 1)), spk


@pytest.mark.slow
def test_segmented_piped_dirs_train_and_extract_through_run_sh(tmp_path):
    """The documented command on a user's segmented dirs with pipes: stages 0-5 (training included)."""
    from helpers import MICRO, run_sh, venv_env, write_config

    train = segmented_dir(tmp_path / "mytrain", ["a", "b", "e", "f"], seconds=9.0)
    test = segmented_dir(tmp_path / "mytest", ["c", "d"])
    (tmp_path / "trials").write_text("c-000 c-001 target\nc-000 d-002 nontarget\n")
    write_config(tmp_path / "seg.yaml", MICRO + [
        "data.corpus=kaldi", f"data.kaldi.train_dir={train}", f"data.kaldi.test_dir={test}",
        f"data.kaldi.trials={tmp_path / 'trials'}", "augment.speed_perturb=false", "loader.batch_size=4",
        "scoring.calibration_fraction=0.4"])
    proc = run_sh("run.sh", "--config", str(tmp_path / "seg.yaml"), "--stop_stage", "5", "--data",
                  str(tmp_path / "data"), "--exp", str(tmp_path / "exp"), env=venv_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    scp = tmp_path / "exp" / "mhfa_tiny" / "embeddings" / "test" / "xvector.scp"
    assert [line.split()[0] for line in scp.read_text().splitlines()] == [
        "c-000", "c-001", "c-002", "d-000", "d-001", "d-002"]
    assert "phase main: done" in (tmp_path / "exp" / "mhfa_tiny" / "log" / "train.log").read_text()
