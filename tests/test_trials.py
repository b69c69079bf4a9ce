from __future__ import annotations

import numpy as np
import pytest

from voxadapt.data.trials import Trial, make_trials, read_trials, voxceleb_path_to_utt, write_trials
from voxadapt.errors import DataError


def test_kaldi_and_voxceleb_formats(tmp_path):
    (tmp_path / "k").write_text("a b target\na c nontarget\n")
    (tmp_path / "v").write_text("1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav\n"
                                "0 id10270/x6uYqmx31kE/00001.wav id10300/ize_eiCFEg0/00003.wav\n")
    assert read_trials(tmp_path / "k") == [Trial("a", "b", True), Trial("a", "c", False)]
    v = read_trials(tmp_path / "v")
    assert v[0] == Trial("id10270-x6uYqmx31kE-00001", "id10270-8jEAjG6SegY-00008", True) and not v[1].target
    assert voxceleb_path_to_utt("id1/v/00002.m4a") == "id1-v-00002"


@pytest.mark.parametrize("text, message", [
    ("a b\n", ":1: expected 3 fields"),
    ("a b c target\n", ":1: expected 3 fields"),
    ("a b yes\n", ":1: label must be target/nontarget"),
    ("a b 1\n", ":1: label '1' in the third column"),
    ("", "trial list is empty"),
])
def test_malformed_trials(tmp_path, text, message):
    (tmp_path / "t").write_text(text)
    with pytest.raises(DataError, match=message):
        read_trials(tmp_path / "t")


@pytest.mark.parametrize("voxceleb", [False, True])
def test_whole_list_reader_equals_the_line_reader(tmp_path, voxceleb):
    from voxadapt.data.kaldi_dir import read_lines
    from voxadapt.data.trials import _read_line_by_line, _read_whole_list

    rng = np.random.default_rng(0)
    pairs = {tuple(p) for p in rng.integers(0, 300, (2000, 2)) if p[0] != p[1]}
    if voxceleb:
        text = "".join(f"{int(i % 7 == j % 7)} id{i % 7}/v{i}/00001.wav id{j % 7}/v{j}/00002.wav\n" for i, j in pairs)
    else:
        text = "".join(f"u{i} u{j} {'target' if i % 7 == j % 7 else 'nontarget'}\n" for i, j in pairs)
    (tmp_path / "t").write_text(text)
    lines = read_lines(tmp_path / "t")
    fast = _read_whole_list(lines)
    assert fast is not None and fast == _read_line_by_line(tmp_path / "t", lines) == read_trials(tmp_path / "t")
    # Tabs, blank lines and doubled spaces leave the clean path, with the same trials.
    (tmp_path / "u").write_text(text.replace(" ", "\t", 3).replace("\n", "\n\n", 2).replace(" ", "  ", 5))
    assert _read_whole_list(read_lines(tmp_path / "u")) is None
    assert read_trials(tmp_path / "u") == fast
    # Repeats and self-trials are named with their line, whatever the path.
    (tmp_path / "r").write_text(text + text.splitlines()[3] + "\n")
    with pytest.raises(DataError, match=f":{len(pairs) + 1}: trial .* repeats line 4"):
        read_trials(tmp_path / "r")


def test_mixed_formats_are_read_line_by_line(tmp_path):
    (tmp_path / "t").write_text("a b target\n1 id1/v/1.wav id2/v/2.wav\n")
    assert read_trials(tmp_path / "t") == [Trial("a", "b", True), Trial("id1-v-1", "id2-v-2", True)]


def test_unknown_utterances_named(tmp_path):
    (tmp_path / "t").write_text("a b target\nx y nontarget\n")
    with pytest.raises(DataError, match=r"2 utterance\(s\) of the trial list are unknown: x, y"):
        read_trials(tmp_path / "t", known={"a", "b"})
    with pytest.raises(DataError, match="trial list not found"):
        read_trials(tmp_path / "missing")


def test_make_trials_properties(tmp_path):
    spk2utt = {f"s{i}": [f"s{i}-{j}" for j in range(6)] for i in range(8)}
    trials = make_trials(spk2utt, 500, 0.2, np.random.default_rng(0))
    assert len(trials) == 500 and sum(t.target for t in trials) == 100
    assert all(t.enroll != t.test for t in trials)
    assert len({(t.enroll, t.test) for t in trials}) == 500
    assert all((t.enroll.split("-")[0] == t.test.split("-")[0]) == t.target for t in trials)
    assert trials == make_trials(spk2utt, 500, 0.2, np.random.default_rng(0))
    write_trials(tmp_path / "t", trials)
    assert read_trials(tmp_path / "t") == trials
    with pytest.raises(DataError, match="cannot draw 100000 trials"):
        make_trials(spk2utt, 100000, 0.2, np.random.default_rng(0))
