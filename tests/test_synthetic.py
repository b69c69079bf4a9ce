"""The embedded corpus: sizes, disjoint speakers, trial lists, determinism, voices that differ."""

from __future__ import annotations

import filecmp

import numpy as np
import soundfile as sf
from helpers import TINY

from voxadapt.config import load_config
from voxadapt.corpus.synthetic import draw_voice, generate_corpus, seeded_rng
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.data.trials import read_trials


def test_sizes_splits_and_trials(tiny_data):
    cfg = load_config(None, TINY).data.synthetic
    sets = {name: DataDir.load(tiny_data / name) for name in ("train", "dev", "test")}
    assert len(sets["train"].spk2utt) == cfg.num_train_speakers
    assert len(sets["dev"].spk2utt) == cfg.num_dev_speakers
    assert len(sets["test"].spk2utt) == cfg.num_test_speakers
    spks = [set(d.spk2utt) for d in sets.values()]
    assert not (spks[0] & spks[1] or spks[0] & spks[2] or spks[1] & spks[2])
    for d in sets.values():
        assert all(len(u) == cfg.utts_per_speaker for u in d.spk2utt.values())
        durs = list(d.reco2dur.values())
        assert min(durs) >= cfg.min_duration - 0.01 and max(durs) <= cfg.max_duration + 0.01
    trials = read_trials(tiny_data / "test" / "trials", known=sets["test"].utt2spk)
    assert len(trials) == cfg.num_trials
    assert sum(t.target for t in trials) / len(trials) >= 0.1
    assert all(t.enroll != t.test for t in trials)
    _, sr = sf.read(sets["test"].wav_scp[trials[0].enroll])
    assert sr == 16000


def test_generation_is_deterministic_and_job_count_free(tmp_path, tiny_data):
    cfg = load_config(None, TINY).data
    generate_corpus(cfg, tmp_path / "data", tmp_path / "audio", nj=1)
    a = DataDir.load(tiny_data / "test")
    b = DataDir.load(tmp_path / "data" / "test")
    assert a.utterance_ids == b.utterance_ids
    for utt in a.utterance_ids:
        assert filecmp.cmp(a.wav_scp[utt], b.wav_scp[utt], shallow=False), utt
    assert (tiny_data / "test" / "trials").read_text() == (tmp_path / "data" / "test" / "trials").read_text()


def _median_f0(path: str) -> float:
    y, sr = sf.read(path)
    f0 = []
    for i in range(0, len(y) - 1024, 512):
        frame = y[i:i + 1024]
        ac = np.correlate(frame, frame, "full")[1023:]
        lo, hi = sr // 400, sr // 60
        k = lo + int(np.argmax(ac[lo:hi]))
        if ac[0] > 0 and ac[k] > 0.5 * ac[0]:
            f0.append(sr / k)
    return float(np.median(f0))


def test_voices_are_consistent_within_and_differ_between_speakers(tiny_data):
    d = DataDir.load(tiny_data / "train")
    per_spk = {s: [_median_f0(d.wav_scp[u]) for u in us] for s, us in d.spk2utt.items()}
    within = np.mean([np.std(np.log(v)) for v in per_spk.values()])
    between = np.std([np.log(np.median(v)) for v in per_spk.values()])
    assert between > 2 * within, (between, within)


def test_voice_profiles_span_human_ranges():
    voices = [draw_voice(f"v{i}", seeded_rng(0, i, 0)) for i in range(400)]
    male = [v.pitch_low for v in voices if v.sex == "male"]
    female = [v.pitch_low for v in voices if v.sex == "female"]
    assert 80 < np.median(male) < 130 and 160 < np.median(female) < 230
    assert np.median([v.formant_scale[1] for v in voices if v.sex == "female"]) > \
        np.median([v.formant_scale[1] for v in voices if v.sex == "male"])
    assert np.std([v.rate_wpm for v in voices]) > 10
    assert len({v.klatt for v in voices}) > 1 and len({v.breath for v in voices}) > 1
