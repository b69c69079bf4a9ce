from __future__ import annotations

from helpers import assert_clean_error, make_data_dir, run_py, set_args
from voxadapt.config import load_config
from voxadapt.corpus.stage import prepare_data_stage
from voxadapt.data.kaldi_dir import DataDir


def test_import_user_dirs_with_voxceleb_style_trials(tmp_path):
    train = make_data_dir(tmp_path / "mytrain", {"a": 2, "b": 2})
    test = make_data_dir(tmp_path / "mytest", {"c": 2, "d": 1})
    (train / "spk2utt").unlink()  # regenerated on import
    (tmp_path / "trials").write_text("c-000 c-001 target\nc-000 d-000 nontarget\n")
    cfg = load_config(None, ["data.corpus=kaldi", f"data.kaldi.train_dir={train}", f"data.kaldi.test_dir={test}",
                             f"data.kaldi.trials={tmp_path / 'trials'}"])
    prepare_data_stage(cfg, tmp_path / "data", 1)
    assert DataDir.load(tmp_path / "data" / "train").spk2utt == {"a": ["a-000", "a-001"], "b": ["b-000", "b-001"]}
    assert (tmp_path / "data" / "test" / "trials").read_text() == (tmp_path / "trials").read_text()
    assert (tmp_path / "data" / "test" / "reco2dur").is_file()


def test_import_errors_name_the_users_file(tmp_path):
    train = make_data_dir(tmp_path / "mytrain", {"a": 2})
    test = make_data_dir(tmp_path / "mytest", {"c": 2})
    (tmp_path / "trials").write_text("c-000 zzz target\n")
    over = ["data.corpus=kaldi", f"data.kaldi.train_dir={train}", f"data.kaldi.test_dir={test}",
            f"data.kaldi.trials={tmp_path / 'trials'}"]
    proc = run_py("prepare_data.py", *set_args(over), "--data", str(tmp_path / "data"))
    assert_clean_error(proc, str(tmp_path / "trials"), "unknown: zzz")
    (train / "utt2spk").write_text("a-001 a\na-000 a\n")
    proc = run_py("prepare_data.py", *set_args(over), "--data", str(tmp_path / "data"))
    assert_clean_error(proc, f"{train}/utt2spk:2: not sorted")
    proc = run_py("prepare_data.py", "--set", "data.corpus=kaldi", "--data", str(tmp_path / "data"))
    assert_clean_error(proc, "--corpus kaldi needs --train_dir")
