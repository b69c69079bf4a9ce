"""VoxCeleb preparation on a small fake tree with VoxCeleb's layout and file names."""

from __future__ import annotations

import pytest
from helpers import assert_clean_error, run_step, set_args, write_wav

from voxadapt.config import load_config
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.data.trials import read_trials
from voxadapt.errors import DataError
from voxadapt.layout import DataLayout
from voxadapt.stages import data as data_stage


@pytest.fixture
def fake_vox(tmp_path):
    vox1, vox2 = tmp_path / "vox1", tmp_path / "vox2"
    seed = 0
    for spk in ("id10001", "id10002"):
        for video in ("aaa", "bbb"):
            for clip in ("00001", "00002"):
                write_wav(vox1 / "wav" / spk / video / f"{clip}.wav", 1.0, seed=seed)
                seed += 1
    for spk in ("id00012", "id00013", "id00014"):
        for clip in ("00001", "00002"):
            # Stand-in for AAC: WAV bytes in a .m4a name, "decoded" with cat in the tests.
            write_wav(vox2 / "dev" / "aac" / spk / "vid" / "tmp.wav", 1.0, seed=seed).rename(
                vox2 / "dev" / "aac" / spk / "vid" / f"{clip}.m4a")
            seed += 1
    (vox1 / "veri_test2.txt").write_text(
        "1 id10001/aaa/00001.wav id10001/bbb/00002.wav\n0 id10001/aaa/00001.wav id10002/aaa/00001.wav\n")
    (vox1 / "list_test_hard2.txt").write_text("0 id10002/bbb/00002.wav id10001/bbb/00001.wav\n")
    return vox1, vox2


def vox_overrides(vox1, vox2, *extra):
    return ["data.corpus=voxceleb", f"data.voxceleb.vox1_root={vox1}", f"data.voxceleb.vox2_root={vox2}",
            "data.voxceleb.m4a_decode_cmd=cat {path}", "data.min_duration=0.5", *extra]


def test_fake_tree_to_kaldi_dirs(fake_vox, tmp_path):
    vox1, vox2 = fake_vox
    cfg = load_config(None, vox_overrides(vox1, vox2))
    data_stage.run(cfg, DataLayout(tmp_path / "data"), nj=2)
    v1 = DataDir.load(tmp_path / "data" / "vox1")
    assert len(v1.utt2spk) == 8 and set(v1.spk2utt) == {"id10001", "id10002"}
    assert v1.utterance_ids[0] == "id10001-aaa-00001"
    o = read_trials(tmp_path / "data" / "vox1" / "trials_O", known=v1.utt2spk)
    assert o[0].enroll == "id10001-aaa-00001" and o[0].target and not o[1].target
    assert (tmp_path / "data" / "vox1" / "trials_O").read_text().splitlines()[0] == \
        "id10001-aaa-00001 id10001-bbb-00002 target"
    assert (tmp_path / "data" / "vox1" / "trials_H").is_file()
    assert not (tmp_path / "data" / "vox1" / "trials_E").exists()
    v2 = DataDir.load(tmp_path / "data" / "vox2_dev")
    assert len(v2.utt2spk) == 6 and all(rx.startswith("cat ") and rx.endswith(" |") for rx in v2.wav_scp.values())
    assert v2.reco2dur["id00012-vid-00001"] == pytest.approx(1.0)
    assert sorted(p.name for p in (vox2 / "dev" / "aac" / "id00012" / "vid").iterdir()) == ["00001.m4a", "00002.m4a"]


def test_m4a_conversion_to_flac(fake_vox, tmp_path):
    vox1, vox2 = fake_vox
    conv = tmp_path / "flac"
    cfg = load_config(None, vox_overrides(vox1, vox2, f"data.voxceleb.convert_dir={conv}"))
    data_stage.run(cfg, DataLayout(tmp_path / "data"), nj=2)
    v2 = DataDir.load(tmp_path / "data" / "vox2_dev")
    assert v2.wav_scp["id00013-vid-00002"] == str(conv / "id00013" / "vid" / "00002.flac")
    assert len(list(conv.rglob("*.flac"))) == 6


def test_missing_pieces_are_clear_errors(fake_vox, tmp_path):
    vox1, vox2 = fake_vox
    with pytest.raises(DataError, match="VoxCeleb needs both roots"):
        data_stage.run(load_config(None, ["data.corpus=voxceleb"]), DataLayout(tmp_path / "d"), nj=1)
    with pytest.raises(DataError, match="no VoxCeleb1 .wav files"):
        data_stage.run(load_config(None, vox_overrides(tmp_path, vox2)), DataLayout(tmp_path / "d"), nj=1)
    for f in vox1.glob("*.txt"):
        f.unlink()
    with pytest.raises(DataError, match="none of VoxCeleb1's cleaned trial lists"):
        data_stage.run(load_config(None, vox_overrides(vox1, vox2)), DataLayout(tmp_path / "d"), nj=1)
    assert not (tmp_path / "d" / "vox1").exists()


def test_failing_decoder_is_named(fake_vox, tmp_path):
    vox1, vox2 = fake_vox
    over = vox_overrides(vox1, vox2, "data.voxceleb.m4a_decode_cmd=no-such-decoder {path}",
                         f"data.voxceleb.convert_dir={tmp_path / 'flac'}")
    proc = run_step("data", *set_args(over), "--data", str(tmp_path / "data"))
    assert_clean_error(proc, "decoding failed", "m4a_decode_cmd")
    assert not (tmp_path / "data" / ".done").exists()
