"""Data-dir reading, validation (tables and audio) and fixing, with the bad cases users hit."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import soundfile as sf
from helpers import ROOT, assert_clean_error, make_data_dir, run_py, run_sh, venv_env, write_wav

from voxadapt.data.kaldi_dir import DataDir
from voxadapt.data.validate import fix_data_dir, validate_data_dir
from voxadapt.errors import DataError


@pytest.fixture
def ddir(tmp_path):
    return make_data_dir(tmp_path / "d", {"spkA": 3, "spkB": 2})


def snapshot(d):
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


def test_valid_dir_reads_and_round_trips(ddir, tmp_path):
    d = validate_data_dir(ddir, 16000)
    assert d.utterance_ids == ["spkA-000", "spkA-001", "spkA-002", "spkB-000", "spkB-001"]
    assert d.spk2utt["spkB"] == ["spkB-000", "spkB-001"]
    assert d.reco2dur == pytest.approx({u: 1.0 for u in d.utterance_ids})
    d.write(tmp_path / "copy")
    for name in ("wav.scp", "utt2spk", "spk2utt"):
        assert (tmp_path / "copy" / name).read_text() == (ddir / name).read_text()


@pytest.mark.parametrize("case, edit, message", [
    ("duplicate id", lambda d: d.joinpath("utt2spk").write_text(
        "spkA-000 spkA\nspkA-000 spkA\nspkA-001 spkA\nspkA-002 spkA\nspkB-000 spkB\nspkB-001 spkB\n"),
     "utt2spk:2: duplicate key 'spkA-000'"),
    ("unsorted", lambda d: d.joinpath("utt2spk").write_text(
        "spkA-001 spkA\nspkA-000 spkA\nspkA-002 spkA\nspkB-000 spkB\nspkB-001 spkB\n"),
     "utt2spk:2: not sorted"),
    ("utt2spk/wav.scp mismatch", lambda d: d.joinpath("utt2spk").write_text(
        "spkA-000 spkA\nspkA-001 spkA\nspkA-002 spkA\nspkB-000 spkB\n"),
     "wav.scp:5: 'spkB-001' is not in utt2spk"),
    ("malformed line", lambda d: d.joinpath("utt2spk").write_text(
        "spkA-000 spkA\nspkA-001\nspkA-002 spkA\nspkB-000 spkB\nspkB-001 spkB\n"),
     "utt2spk:2: expected '<key> <value>'"),
    ("two speakers on a line", lambda d: d.joinpath("utt2spk").write_text(
        "spkA-000 spkA x\nspkA-001 spkA\nspkA-002 spkA\nspkB-000 spkB\nspkB-001 spkB\n"),
     "utt2spk:1: expected '<utt> <speaker>'"),
    ("empty line", lambda d: d.joinpath("wav.scp").write_text(d.joinpath("wav.scp").read_text() + "\n"),
     "wav.scp:6: empty line"),
    ("spk2utt disagrees", lambda d: d.joinpath("spk2utt").write_text(
        "spkA spkA-000 spkA-001\nspkB spkB-000 spkB-001\n"), "spk2utt:1: speaker 'spkA' disagrees"),
    ("speaker not a prefix", lambda d: d.joinpath("utt2spk").write_text(
        "spkA-000 zed\nspkA-001 spkA\nspkA-002 spkA\nspkB-000 spkB\nspkB-001 spkB\n") or
     d.joinpath("spk2utt").unlink(), "utterance order differs when sorted by speaker"),
    ("empty wav.scp", lambda d: d.joinpath("wav.scp").write_text(""), "wav.scp: empty"),
    ("missing utt2spk", lambda d: d.joinpath("utt2spk").unlink(), "utt2spk: missing"),
    ("not UTF-8", lambda d: d.joinpath("utt2spk").write_bytes(b"spkA-000 \xff\n"), "utt2spk:1: not UTF-8"),
])
def test_bad_tables(ddir, case, edit, message):
    edit(ddir)
    with pytest.raises(DataError, match=None) as err:
        validate_data_dir(ddir, 16000)
    assert message in str(err.value), case


def set_audio(ddir, utt, maker):
    lines = ddir.joinpath("wav.scp").read_text().splitlines()
    out = []
    for line in lines:
        key, _ = line.split(maxsplit=1)
        out.append(f"{key} {maker(ddir / 'wav' / (key + '.bad')) }" if key == utt else line)
    ddir.joinpath("wav.scp").write_text("\n".join(out) + "\n")


@pytest.mark.parametrize("case, maker, message", [
    ("missing file", lambda p: p, "audio file not found"),
    ("not audio", lambda p: (p.write_text("hello, not a wav"), p)[1], "cannot decode audio"),
    ("empty file", lambda p: (p.write_bytes(b""), p)[1], "cannot decode audio"),
    ("truncated", lambda p: (p.write_bytes(write_wav(p.with_suffix(".src.wav"), 1.0).read_bytes()[:2000]), p)[1],
     "truncated audio"),
    ("wrong rate", lambda p: write_wav(p.with_suffix(".wav"), 1.0, sr=8000), "sample rate 8000 Hz, expected 16000"),
    ("stereo", lambda p: write_wav(p.with_suffix(".wav"), 1.0, channels=2), "2 channels, the recipe needs mono"),
    ("too short", lambda p: write_wav(p.with_suffix(".wav"), 0.05), "only 0.050 s long"),
    ("silent", lambda p: write_wav(p.with_suffix(".wav"), 1.0, amplitude=0.0), "silent"),
    ("dithered silence", lambda p: write_dithered_silence(p.with_suffix(".wav")), "silent"),
    ("failing pipe", lambda p: "false |", "failed with exit code 1"),
    ("pipe writing nothing", lambda p: "true |", "wrote no audio"),
])
def test_bad_audio_names_the_wav_scp_line(ddir, case, maker, message):
    set_audio(ddir, "spkA-001", maker)
    with pytest.raises(DataError) as err:
        validate_data_dir(ddir, 16000, nj=2 if case == "stereo" else 1)
    text = str(err.value)
    assert "wav.scp:2: recording 'spkA-001'" in text and message in text, (case, text)


def write_dithered_silence(path):
    """What `sox -n` writes to a 16-bit file: zeros with +-1 step of triangular dither."""
    rng = np.random.default_rng(0)
    sf.write(path, np.round(rng.uniform(-0.5, 0.5, 16000) + rng.uniform(-0.5, 0.5, 16000)) / 32768, 16000, subtype="PCM_16")
    return path


def test_every_audio_fault_in_one_run_and_fixing_drops_them(tmp_path):
    d = make_data_dir(tmp_path / "d", {"spkA": 6, "spkB": 6})
    write_wav(d / "wav" / "spkA-001.wav", 1.0, sr=22050)
    write_wav(d / "wav" / "spkA-002.wav", 1.0, channels=2)
    write_wav(d / "wav" / "spkA-003.wav", 0.1)
    (d / "wav" / "spkB-004.wav").unlink()
    with pytest.raises(DataError) as err:
        validate_data_dir(d, 16000)
    text = str(err.value)
    assert "4 of 12 recordings have audio faults (sample rate: 1, channels: 1, too short: 1, unreadable: 1)" in text
    assert all(f"'{u}'" in text for u in ("spkA-001", "spkA-002", "spkA-003", "spkB-004")), text
    assert "utils/fix_data_dir.sh --drop-bad-audio true" in text
    proc = run_sh("utils/fix_data_dir.sh", str(d))
    assert proc.returncode == 0 and "12 of 12 utterances kept (audio not checked: --drop-bad-audio true" in proc.stdout
    proc = run_sh("utils/fix_data_dir.sh", "--drop-bad-audio", "true", "--allow-drop", "40", str(d))
    assert proc.returncode == 0, proc.stderr
    assert "wav.scp: audio fault (channels): 1 dropped ('spkA-002')" in proc.stdout
    assert "8 of 12 utterances kept" in proc.stdout
    assert len(validate_data_dir(d, 16000).utterance_ids) == 8 and "spkB-004" not in DataDir.load(d).utt2spk


def test_truncated_wav_is_detected_even_if_header_claims_more(ddir, tmp_path):
    p = write_wav(tmp_path / "long.wav", 2.0)
    raw = p.read_bytes()
    (tmp_path / "cut.wav").write_bytes(raw[: len(raw) // 2])
    set_audio(ddir, "spkB-000", lambda _: tmp_path / "cut.wav")
    with pytest.raises(DataError, match="truncated audio"):
        validate_data_dir(ddir, 16000)


def test_pipe_and_segments_work(ddir, tmp_path):
    long = write_wav(tmp_path / "long.wav", 3.0)
    (ddir / "wav.scp").write_text(f"recA cat {long} |\nrecB {long}\n")
    (ddir / "segments").write_text("spkA-000 recA 0.0 1.0\nspkA-001 recA 1.0 2.0\nspkA-002 recA 2.0 -1\n"
                                   "spkB-000 recB 0 1.5\nspkB-001 recB 1.5 2.9\n")
    d = validate_data_dir(ddir, 16000)
    assert d.recording_of("spkA-001") == "recA" and d.reco2dur["recA"] == pytest.approx(3.0)
    d.write(tmp_path / "checked")  # as stage 0 and evaluation write it: Kaldi's utt2dur, per segment
    assert (tmp_path / "checked" / "utt2dur").read_text() == ("spkA-000 1.0000\nspkA-001 1.0000\nspkA-002 1.0000\n"
                                                             "spkB-000 1.5000\nspkB-001 1.4000\n")
    (ddir / "segments").write_text("spkA-000 recA 0.0 1.0\nspkA-001 recA 1.0 2.0\nspkA-002 recA 2.0 -1\n"
                                   "spkB-000 recB 0 1.5\nspkB-001 recB 1.5 9.0\n")
    with pytest.raises(DataError, match="segments:5: segment 'spkB-001' ends at 9.0 s"):
        validate_data_dir(ddir, 16000)


def test_pipes_can_be_refused(ddir, tmp_path, monkeypatch):
    (ddir / "wav.scp").write_text(ddir.joinpath("wav.scp").read_text().replace(
        "spkA-000 ", "spkA-000 cat ", 1).replace(".wav\nspkA-001", ".wav |\nspkA-001", 1))
    assert validate_data_dir(ddir, 16000)
    monkeypatch.setenv("VOXADAPT_NO_PIPES", "1")
    with pytest.raises(DataError, match="pipes are disabled"):
        validate_data_dir(ddir, 16000)


def test_paths_with_spaces_and_unicode(tmp_path):
    d = make_data_dir(tmp_path / "dir with space é", {"spk": 2})
    assert validate_data_dir(d, 16000).utterance_ids == ["spk-000", "spk-001"]


def test_missing_dir_and_empty_dir(tmp_path):
    with pytest.raises(DataError, match="data dir not found"):
        DataDir.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="wav.scp: missing"):
        DataDir.load(tmp_path / "empty")


def test_fix_data_dir_drops_and_reports(ddir):
    (ddir / "utt2spk").write_text("spkB-001 spkB\nspkA-000 spkA\nspkA-000 spkA\nbroken\nspkA-001 spkA\n"
                                  "spkA-002 spkA\nspkZ-000 spkZ\n")
    (ddir / "spk2utt").write_text("garbage\n")
    original = (ddir / "utt2spk").read_text()
    report = fix_data_dir(ddir, allow_drop=50)
    assert report.dropped["utt2spk: duplicate keys (the first is kept)"] == ["'spkA-000' on line 3"]
    assert report.dropped["utt2spk: malformed lines"] == ["line 4"]
    assert report.dropped["utt2spk: no audio for it (not in wav.scp)"] == ["'spkZ-000'"]
    assert report.dropped["wav.scp: no utterance uses the recording"] == ["'spkB-000'"]
    assert (report.utterances_before, report.utterances_after) == (5, 4)  # utterances, not lines
    d = validate_data_dir(ddir, 16000)
    assert d.utterance_ids == ["spkA-000", "spkA-001", "spkA-002", "spkB-001"]
    assert (ddir / ".backup" / "1" / "utt2spk").read_text() == original
    assert "'spkZ-000'" in (ddir / ".backup" / "1" / "dropped.txt").read_text()
    # A second run keeps the first backup: the originals are never overwritten.
    fix_data_dir(ddir)
    assert (ddir / ".backup" / "1" / "utt2spk").read_text() == original
    assert (ddir / ".backup" / "2" / "utt2spk").is_file()


def test_fix_refuses_to_drop_most_of_a_dir_and_prints_one_line_per_reason(ddir):
    # segments for only some utterances: fixing would silently lose the rest
    (ddir / "segments").write_text("spkA-000 spkA-000 0 0.5\n")
    before = snapshot(ddir)
    proc = run_sh("utils/fix_data_dir.sh", str(ddir))
    assert_clean_error(proc, "would drop 4 of 5 utterances (80 %", "more than the allowed 10 %", "--allow-drop 81")
    assert snapshot(ddir) == before
    proc = run_sh("utils/fix_data_dir.sh", "--allow-drop", "90", str(ddir))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3, lines  # two reasons and the closing line, not one line per utterance
    assert "utt2spk: no audio for it (not in segments): 4 dropped ('spkA-001', 'spkA-002', 'spkB-000', ... (1 more))" in lines[0]
    assert "1 of 5 utterances kept" in lines[-1]


def test_fix_removes_bom_and_crlf(ddir):
    (ddir / "utt2spk").write_bytes(b"\xef\xbb\xbf" + (ddir / "utt2spk").read_bytes().replace(b"\n", b"\r\n"))
    report = fix_data_dir(ddir)
    assert "utt2spk: byte-order mark removed" in report.fixed and not report.dropped  # repaired, nothing dropped
    assert "utt2spk: byte-order mark removed: 1 fixed (line 1)" in report.summary()
    assert (report.utterances_before, report.utterances_after) == (5, 5)
    validate_data_dir(ddir, 16000)


def test_fix_refuses_to_empty_a_dir(ddir):
    (ddir / "utt2spk").write_text("x y\n")
    before = snapshot(ddir)
    with pytest.raises(DataError, match="no usable utterance would be left"):
        fix_data_dir(ddir)
    assert snapshot(ddir) == before


def test_validate_cli_errors_and_success(ddir):
    proc = run_py("validate_data_dir.py", str(ddir))
    assert proc.returncode == 0 and "OK (5 utterances, 2 speakers)" in proc.stdout
    (ddir / "utt2spk").write_text("spkA-000 spkA\n")
    assert_clean_error(run_py("validate_data_dir.py", str(ddir)), "wav.scp:2", "not in utt2spk", "fix_data_dir")


def test_shell_wrappers_have_help():
    for script in ("utils/validate_data_dir.sh", "utils/fix_data_dir.sh", "run.sh", "tests/run.sh",
                   "steps/extract_xvectors.sh", "local/evaluate.sh"):
        proc = subprocess.run(["bash", str(ROOT / script), "--help"], capture_output=True, text=True)
        assert proc.returncode == 0 and "Usage" in proc.stdout, script


def test_key_values_clean_and_irregular_tables(tmp_path):
    from voxadapt.data.kaldi_dir import read_key_values

    (tmp_path / "clean").write_text("a x.ark:12\nb x.ark:40\n")
    assert read_key_values(tmp_path / "clean") == (["a", "b"], ["x.ark:12", "x.ark:40"])
    # A value with spaces (a pipe) and a tab after the key: read as Kaldi reads them.
    (tmp_path / "irregular").write_text("a sox in.wav -t wav - |\nb\tx.ark:40\n")
    assert read_key_values(tmp_path / "irregular") == (["a", "b"], ["sox in.wav -t wav - |", "x.ark:40"])
    (tmp_path / "blank").write_text("a x\n\nb y\n")
    with pytest.raises(DataError, match="blank:2: empty line"):
        read_key_values(tmp_path / "blank")


def test_validation_draws_no_progress_bar_into_a_log(ddir, capfd):
    # A bar in a log file leaves its line open ('\r'), and the next message, an ERROR say, lands on it.
    validate_data_dir(ddir, 16000, audio="decode")
    assert "\r" not in capfd.readouterr().err


def test_relative_wav_scp_paths_are_read_from_the_recipe_directory_everywhere(ddir, tmp_path):
    """Kaldi's convention, the same in the validator as in every stage: a path relative to where the
    user happens to run the validator would pass there and fail in the recipe."""
    lines = (ddir / "wav.scp").read_text().splitlines()
    utt, path = lines[0].split()
    lines[0] = f"{utt} {os.path.relpath(path, tmp_path)}"  # right from tmp_path, wrong from the recipe
    (ddir / "wav.scp").write_text("\n".join(lines) + "\n")
    for check in ("decode", "header"):
        proc = subprocess.run(["bash", str(ROOT / "utils" / "validate_data_dir.sh"), "--audio-check", check, "d"],
                              cwd=tmp_path, capture_output=True, text=True, env=venv_env())
        assert_clean_error(proc, f"'{lines[0].split()[1]}'", "not found",
                           f"relative paths in wav.scp are read from the directory the recipe runs in, {ROOT}")
    lines[0] = f"{utt} {os.path.relpath(path, ROOT)}"  # relative to the recipe directory: found
    (ddir / "wav.scp").write_text("\n".join(lines) + "\n")
    proc = subprocess.run(["bash", str(ROOT / "utils" / "validate_data_dir.sh"), "d"], cwd=tmp_path,
                          capture_output=True, text=True, env=venv_env())
    assert proc.returncode == 0, proc.stderr
