"""Stage 2 resources and online augmentation: SNRs, reverberation, speed perturbation, bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf
from helpers import TINY, assert_clean_error, run_step, set_args, write_wav
from lhotse import AudioSource, MonoCut, Recording, SupervisionSegment, load_manifest_lazy

from voxadapt.augment.generate import make_rir
from voxadapt.augment.online import Augmenter, power, reverberate, snr_db
from voxadapt.config import load_config
from voxadapt.data.examples import ExampleTable
from voxadapt.errors import DataError
from voxadapt.layout import AUGMENT_KINDS, DataLayout
from voxadapt.stages import augment as augment_stage


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, TINY)


@pytest.fixture(scope="module")
def augmenter(cfg, tiny_data):
    return Augmenter(cfg.augment, {k: DataLayout(tiny_data).augment_manifest(k) for k in AUGMENT_KINDS}, cfg.data.sample_rate)



def cut_of(source: AudioSource, seconds: float, speaker: str, sr: int = 16000) -> MonoCut:
    """A one-utterance training cut of `seconds` of the recording `source`."""
    rec = Recording(id="r", sources=[source], sampling_rate=sr, num_samples=int(seconds * sr), duration=seconds)
    return MonoCut(id="r", start=0.0, duration=seconds, channel=0, recording=rec,
                   supervisions=[SupervisionSegment("r", "r", 0.0, seconds, channel=0, speaker=speaker)])

def speech(tiny_data, seconds=3.0):
    cuts = load_manifest_lazy(tiny_data / "manifests" / "train" / "cuts.jsonl.gz")
    x = next(iter(cuts)).load_audio()[0]
    return np.resize(x, int(seconds * 16000)).astype(np.float32)


@pytest.mark.parametrize("kind", ["telephone", "codec"])
def test_channel_kinds_keep_the_length_and_change_the_audio(augmenter, tiny_data, kind):
    x = speech(tiny_data)
    y, got = augmenter(x, np.random.default_rng(0), kind)
    assert got == kind and y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert not np.allclose(y, x, atol=1e-3)


def test_channel_kinds_are_drawn_by_their_weights(cfg, tiny_data):
    import dataclasses

    only_channels = dataclasses.replace(cfg.augment, probability=1.0, weights={"telephone": 1.0, "codec": 1.0})
    aug = Augmenter(only_channels, {k: DataLayout(tiny_data).augment_manifest(k) for k in AUGMENT_KINDS}, 16000)
    rng = np.random.default_rng(0)
    kinds = {aug(speech(tiny_data, 1.0), rng)[1] for _ in range(20)}
    assert kinds == {"telephone", "codec"}


@pytest.mark.parametrize("kind, lo_hi", [("noise", (0, 15)), ("music", (5, 15)), ("babble", (13, 20))])
def test_snr_is_what_was_asked(augmenter, tiny_data, kind, lo_hi):
    x = speech(tiny_data)
    for seed in range(12):
        rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
        y, got = augmenter(x, rng_a, kind)
        assert got == kind
        achieved = snr_db(x, y - x)
        # Re-draw what the augmenter drew to learn the requested SNR.
        if kind == "babble":
            k = int(rng_b.integers(3, 9))
            for _ in range(k):
                augmenter.pools["speech"].crop(len(x), rng_b)
        else:
            augmenter.pools[kind].crop(len(x), rng_b)
        requested = rng_b.uniform(*lo_hi)
        assert lo_hi[0] - 0.5 <= achieved <= lo_hi[1] + 0.5
        assert abs(achieved - requested) < 0.5, (kind, seed, achieved, requested)


def test_default_mix_rate_and_kinds(augmenter, tiny_data):
    x = speech(tiny_data, 1.0)
    kinds = [augmenter(x, np.random.default_rng(s))[1] for s in range(400)]
    assert abs(kinds.count("none") / 400 - 0.4) < 0.08
    assert {"reverb", "noise", "music", "babble"} <= set(kinds)


def test_reverberation_adds_a_tail_and_keeps_power():
    sr = 16000
    rng = np.random.default_rng(0)
    rir = make_rir(sr, rng)
    assert np.sum(rir**2) == pytest.approx(1.0)
    first = int(np.argmax(np.abs(rir)))
    energy = np.cumsum(rir[first:] ** 2)
    assert energy[int(0.05 * sr)] < 0.999  # energy keeps arriving after 50 ms: a diffuse tail
    dry = np.zeros(sr, dtype=np.float32)
    dry[: sr // 4] = rng.standard_normal(sr // 4)
    wet = reverberate(dry, rir, normalize=True)
    assert power(wet) == pytest.approx(power(dry), rel=1e-4)
    tail = slice(sr // 4 + 800, sr // 4 + 3200)  # 50-200 ms after the burst ends
    assert power(wet[tail]) > 1e-4 * power(wet) and not dry[tail].any()
    assert not np.allclose(power(reverberate(dry, 3 * rir, normalize=False)), power(dry))


def test_speed_perturbation_makes_new_speakers(cfg, tiny_data):
    cuts = list(load_manifest_lazy(DataLayout(tiny_data).cuts(cfg.data.sets.train)))
    n_spk = cfg.data.synthetic.num_train_speakers
    table = ExampleTable.from_manifest(DataLayout(tiny_data).cuts(cfg.data.sets.train), 16000, cfg.augment.speeds)
    assert len(table) == 3 * len(cuts) and table.num_classes == 3 * n_spk
    assert sorted(set(table.speed)) == [0.9, 1.0, 1.1]
    for k, cut in enumerate(cuts[:5]):
        for copy, factor in enumerate((1.0, 0.9, 1.1)):
            i = copy * len(cuts) + k
            prefix = "" if factor == 1.0 else f"sp{factor}-"
            assert table.speed[i] == factor and table.classes[table.label[i]] == prefix + cut.supervisions[0].speaker
            assert (table.start[i], table.duration[i]) == (cut.start, cut.duration)


def test_speed_perturbed_crop_changes_pitch(tmp_path):
    sr, f0 = 16000, 440.0
    t = np.arange(sr * 2) / sr
    sf.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * f0 * t), sr)
    cut = cut_of(AudioSource("file", [0], str(tmp_path / "tone.wav")), 2.0, "a")
    table = ExampleTable.from_cuts([cut], sr, [1.1])
    assert table.classes == ["a", "sp1.1-a"]
    for i, want in ((0, f0), (1, f0 * 1.1)):
        x = table.crop(i, sr, np.random.default_rng(0))
        assert len(x) == sr
        peak = np.argmax(np.abs(np.fft.rfft(x))) * sr / len(x)
        assert abs(peak - want) < 3, (i, peak)
    short = table.crop(0, 3 * sr, np.random.default_rng(0))  # longer than the file: repeated
    assert len(short) == 3 * sr and np.allclose(short[:sr], short[2 * sr:3 * sr], atol=1e-4)



def test_perturbed_crop_of_a_segment_reads_the_segment_only(tmp_path):
    """A span within 1 ms of the declared recording makes lhotse read the whole file: the table
    must declare the recording's real length, not the span's end (a 0.55-s segment of a 2-s file)."""
    sr = 16000
    write_wav(tmp_path / "long.wav", 2.0, sr)
    rec = Recording.from_file(tmp_path / "long.wav")
    seg = MonoCut(id="s", start=0.0, duration=8806 / sr, channel=0, recording=rec,
                  supervisions=[SupervisionSegment("s", rec.id, 0.0, 8806 / sr, channel=0, speaker="a")])
    table = ExampleTable.from_cuts([seg], sr, [1.1])
    for k in range(5):  # the crop needs 8802 input samples: it starts at one of the first 5
        x = table.crop(1, 8000, np.random.default_rng(k))
        assert len(x) == 8000 and np.abs(x).max() > 0.01


def test_stage2_is_idempotent(cfg, tiny_data, caplog):
    import logging

    caplog.set_level(logging.INFO)
    augment_stage.run(cfg, DataLayout(tiny_data))
    assert "already made; nothing to do" in caplog.text


def _stage2(tmp_path, tiny_data, *over):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data / "manifests", data / "manifests", ignore=shutil.ignore_patterns("augment", "*_sp"))
    return run_step("augment", *set_args(TINY + list(over)), "--data", str(data)), data


def test_musan_path_that_is_not_musan(tmp_path, tiny_data):
    (tmp_path / "notmusan").mkdir()
    proc, data = _stage2(tmp_path, tiny_data, f"augment.musan_root={tmp_path / 'notmusan'}")
    assert_clean_error(proc, "not a MUSAN directory (no 'noise/' inside)")
    assert not (data / "manifests" / "augment").exists()


def test_empty_noise_set(tmp_path, tiny_data):
    musan = tmp_path / "musan"
    for part in ("music", "speech"):
        write_wav(musan / part / "x" / "a.wav", 1.0)
    (musan / "noise").mkdir()
    proc, _ = _stage2(tmp_path, tiny_data, f"augment.musan_root={musan}")
    assert_clean_error(proc, "noise: no .wav files")


def test_rir_shorter_than_1ms(tmp_path, tiny_data):
    rirs = tmp_path / "RIRS_NOISES"
    write_wav(rirs / "simulated_rirs" / "smallroom" / "Room001" / "Room001-00001.wav", 0.5)
    write_wav(rirs / "simulated_rirs" / "smallroom" / "Room001" / "Room001-00002.wav", 0.0005)
    proc, _ = _stage2(tmp_path, tiny_data, f"augment.rirs_root={rirs}")
    assert_clean_error(proc, "Room001-00002.wav", "RIR only 0.50 ms long (minimum 1 ms)")


def test_real_musan_and_rirs_layout_is_used(tmp_path, tiny_data):
    musan, rirs = tmp_path / "musan", tmp_path / "RIRS_NOISES"
    for part in ("noise", "music", "speech"):
        write_wav(musan / part / "free-sound" / f"{part}-0000.wav", 2.0)
    write_wav(rirs / "simulated_rirs" / "mediumroom" / "Room002" / "Room002-00001.wav", 0.3)
    proc, data = _stage2(tmp_path, tiny_data, f"augment.musan_root={musan}", f"augment.rirs_root={rirs}")
    assert proc.returncode == 0, proc.stderr
    rir = list(load_manifest_lazy(data / "manifests" / "augment" / "rir.jsonl.gz"))
    assert [r.id for r in rir] == ["medium-Room002-00001"]
    assert not (data / "augment").exists()  # nothing generated when both corpora are given


def test_unknown_weight_kind_is_a_config_error():
    with pytest.raises(Exception, match="weights keys must be among"):
        load_config(None, ["augment.weights={thunder: 1.0}"])


def test_loader_reads_pipe_sources(tmp_path):
    p = write_wav(tmp_path / "a.wav", 1.0)
    piped, direct = (ExampleTable.from_cuts([cut_of(src, 1.0, "a")], 16000)
                     for src in (AudioSource("command", [0], f"cat {p}"), AudioSource("file", [0], str(p))))
    x = piped.crop(0, 8000, np.random.default_rng(0))
    # The same random crop as from the file itself, and not silence.
    assert len(x) == 8000 and np.array_equal(x, direct.crop(0, 8000, np.random.default_rng(0))) and np.abs(x).max() > 0.01
    with pytest.raises(DataError, match=re.escape("'false |': cannot read training audio")):
        ExampleTable.from_cuts([cut_of(AudioSource("command", [0], "false"), 1.0, "a")], 16000).crop(
            0, 8000, np.random.default_rng(0))
