"""VoxCeleb's bookkeeping at 1 % of its real counts (12,455 files, real AAC for VoxCeleb2): the
importer, the header validation of a large dir, and training data in shards. The full-size
rehearsal is benchmarks/voxceleb_scale.py."""

from __future__ import annotations

import gzip
import json
import logging
import shlex
import shutil

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from helpers import assert_clean_error, run_step, set_args, write_wav

from voxadapt.config import load_config
from voxadapt.corpus.voxceleb_tree import VOX1, VOX2_DEV, build_tree, scaled
from voxadapt.data.examples import ExampleTable
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.data.mp4 import mp4_audio
from voxadapt.data.sampler import SpeakerBatchSampler
from voxadapt.data.shards import write_shards
from voxadapt.data.trials import read_trials
from voxadapt.data.validate import validate_data_dir
from voxadapt.errors import DataError
from voxadapt.layout import DataLayout
from voxadapt.stages import data as data_stage

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
DECODE = f"{shlex.quote(FFMPEG)} -nostdin -v error -i {{path}} -ac 1 -ar 16000 -f wav -"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return build_tree(tmp_path_factory.mktemp("vox") / "tree", 0.01, pool_size=12, ffmpeg=FFMPEG)


def vox_config(tree, *extra):
    return load_config(None, ["data.corpus=voxceleb", f"data.voxceleb.vox1_root={tree.vox1}",
                              f"data.voxceleb.vox2_root={tree.vox2}", f"data.voxceleb.m4a_decode_cmd={DECODE}",
                              "data.validation_sample=40", *extra])


def test_tree_has_voxceleb_layout_and_counts(tree):
    v1, v2 = scaled(VOX1, 0.01), scaled(VOX2_DEV, 0.01)
    wavs = sorted(tree.vox1.glob("wav/id*/*/*.wav"))
    m4as = sorted(tree.vox2.glob("dev/aac/id*/*/*.m4a"))
    assert (len(wavs), len(m4as)) == (v1.utterances, v2.utterances) == (tree.vox1_utts, tree.vox2_utts)
    assert len({p.parts[-3] for p in wavs}) == v1.speakers and len({p.parts[-2] for p in m4as}) == v2.videos
    assert wavs[0].relative_to(tree.vox1).as_posix().startswith("wav/id10001/") and wavs[0].name == "00001.wav"
    for name, n in tree.trials.items():
        lines = (tree.vox1 / name).read_text().splitlines()
        assert len(lines) == n == len(set(lines)) and lines[0].split()[0] in ("0", "1")
    assert mp4_audio(m4as[0]).sample_rate == 16000 and mp4_audio(m4as[0]).channels == 1


def test_mp4_header_duration_matches_ffmpeg(tree):
    import io
    import subprocess

    import soundfile as sf

    for path in sorted((tree.vox2.parent / "pool").glob("*.m4a"))[:3]:
        wav = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-f", "wav", "-"], capture_output=True).stdout
        decoded = sf.info(io.BytesIO(wav)).frames / 16000
        # AAC decoders pad the last frame: at most 1,024 samples beyond the header's length.
        assert 0 <= decoded - mp4_audio(path).duration <= 1024 / 16000 + 1e-9


def test_import_with_header_validation(tree, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    layout = DataLayout(tmp_path / "data")
    data_stage.run(vox_config(tree), layout, nj=2)
    v1, v2 = DataDir.load(layout.set_dir("vox1")), DataDir.load(layout.set_dir("vox2_dev"))
    assert (len(v1.utt2spk), len(v2.utt2spk)) == (tree.vox1_utts, tree.vox2_utts)
    assert len(v2.spk2utt) == scaled(VOX2_DEV, 0.01).speakers
    # VoxCeleb2's pipes (10,920 > 2,000): durations from the MP4 headers, checked on a decoded sample.
    assert f"{layout.set_dir('vox2_dev')}: a sample of 40 recordings decoded in full" in caplog.text
    pool = {p.name: mp4_audio(p).duration for p in (tree.vox2.parent / "pool").glob("*.m4a")}
    assert set(np.round(list(v2.reco2dur.values()), 3)) <= set(np.round(list(pool.values()), 3))
    for suffix, name in (("O", "veri_test2.txt"), ("E", "list_test_all2.txt"), ("H", "list_test_hard2.txt")):
        assert len(read_trials(layout.set_dir("vox1") / f"trials_{suffix}", known=v1.utt2spk)) == tree.trials[name]


def test_header_mode_names_a_broken_m4a(tree, tmp_path):
    bad = next(tree.vox2.glob("dev/aac/id*/*/00001.m4a"))
    original = tmp_path / "saved.m4a"
    shutil.copyfile(bad, original)
    bad.unlink()  # a hard link: replace it, the pool file stays intact
    bad.write_bytes(b"\0\0\0\x08free" + b"x" * 100)
    try:
        proc = run_step("data", *set_args(["data.corpus=voxceleb", f"data.voxceleb.vox1_root={tree.vox1}",
                                                     f"data.voxceleb.vox2_root={tree.vox2}"]),
                      "--data", str(tmp_path / "data"), "--nj", "2")
        assert_clean_error(proc, str(bad), "not a readable MP4 audio header", "re-download the file")
        assert not (tmp_path / "data" / "vox2_dev").exists()
    finally:
        bad.unlink()
        shutil.copyfile(original, bad)


def test_header_mode_decodes_a_sample_and_compares_durations(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for i in range(5):
        write_wav(tmp_path / f"s-{i}.wav", 1.0 + i / 10, seed=i)
    (d / "wav.scp").write_text("".join(f"s-{i} cat {tmp_path}/s-{i}.wav |\n" for i in range(5)))
    (d / "utt2spk").write_text("".join(f"s-{i} s\n" for i in range(5)))
    (d / "reco2dur").write_text("".join(f"s-{i} {1.0 + i / 10:.4f}\n" for i in range(5)))
    assert validate_data_dir(d, 16000, audio="header", sample=5).reco2dur["s-4"] == pytest.approx(1.4)
    (d / "reco2dur").write_text("".join(f"s-{i} {2.0 if i == 3 else 1.0 + i / 10:.4f}\n" for i in range(5)))
    with pytest.raises(DataError, match=r"wav.scp:4: recording 's-3' decodes to 1.300 s but its header"):
        validate_data_dir(d, 16000, audio="header", sample=5)
    # Without the sample, the header mode trusts reco2dur for pipes; 'decode' never does.
    assert validate_data_dir(d, 16000, audio="header", sample=0).reco2dur["s-3"] == 2.0
    assert validate_data_dir(d, 16000, audio="decode").reco2dur["s-3"] == pytest.approx(1.3)


def test_header_mode_checks_file_headers(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    write_wav(tmp_path / "a-0.wav", 1.0)
    write_wav(tmp_path / "a-1.wav", 1.0, sr=8000)
    (d / "wav.scp").write_text(f"a-0 {tmp_path}/a-0.wav\na-1 {tmp_path}/a-1.wav\n")
    (d / "utt2spk").write_text("a-0 a\na-1 a\n")
    with pytest.raises(DataError, match=r"wav.scp:2: recording 'a-1': sample rate 8000 Hz, expected 16000"):
        validate_data_dir(d, 16000, audio="header", sample=0)
    (tmp_path / "a-1.wav").unlink()
    with pytest.raises(DataError, match=r"wav.scp:2: recording 'a-1': .*a-1.wav': not found"):
        validate_data_dir(d, 16000, audio="header", sample=0)


# ------------------------------------------------------------------------------------ shards


@pytest.fixture(scope="module")
def sharded(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "train"
    write_shards(DataLayout(tiny_data).cuts("train"), out, 7, seed=0, nj=2)
    return tiny_data, out


def test_shards_round_trip(sharded):
    from lhotse import CutSet

    data, shards = sharded
    cuts = DataLayout(data).cuts("train")
    per_file = ExampleTable.from_manifest(cuts, 16000, [0.9, 1.1])
    sharded_table = ExampleTable.from_shards(shards, 16000, [0.9, 1.1])
    assert sharded_table.classes == per_file.classes and len(sharded_table) == len(per_file)
    with gzip.open(cuts, "rt") as f:
        ids = [json.loads(line)["id"] for line in f]
    shard_ids = [c.id for c in CutSet.from_shar(in_dir=shards / "shar")]  # lhotse reads our shards
    assert sorted(shard_ids) == sorted(ids) and shard_ids != ids  # shuffled: shards mix speakers
    n = len(ids)
    for k in range(0, n, 9):  # the same crops, at every speed, from the files and from the shards
        i = ids.index(shard_ids[k])
        for copy in range(3):
            a = per_file.crop(copy * n + i, 24000, np.random.default_rng(k))
            b = sharded_table.crop(copy * n + k, 24000, np.random.default_rng(k))
            assert per_file.label[copy * n + i] == sharded_table.label[copy * n + k]
            np.testing.assert_array_equal(a, b)


def batches(sampler, count=None):
    out = []
    for spec in sampler:
        out.append(spec.examples)
        if count and len(out) == count:
            break
    return out


def test_shard_sampler_reads_few_shards_and_keeps_its_guarantees(sharded):
    _, shards = sharded
    table = ExampleTable.from_shards(shards, 16000, [0.9, 1.1])

    def sampler(**kw):
        return SpeakerBatchSampler(table.label, 8, seed=3, shards=table.shard, shard_window=2, **kw)

    whole = batches(sampler())
    for b in whole:  # each batch from at most two windows of two shards
        assert len(set(table.shard[b])) <= 4
    assert sorted(i for b in whole for i in b) == sorted(set(i for b in whole for i in b))  # no repeats in an epoch
    assert whole == batches(sampler())  # deterministic for the seed
    r0, r1 = batches(sampler(world_size=2, rank=0)), batches(sampler(world_size=2, rank=1))
    assert whole == [a + b for a, b in zip(r0, r1)]  # 1 process x 8 = 2 processes x 4
    first = sampler()
    head = []
    for spec in first:
        head.append(spec.examples)
        if len(head) == 3:
            state = first.state_dict(at=spec.state_after)
            break
    resumed = sampler()
    resumed.load_state_dict(state)
    assert head + batches(resumed) == whole  # resume mid-epoch


def test_training_from_shards_resumes_after_a_kill(tiny_data, tmp_path):
    """Stage 2 (run.sh) writes the shards; a phase trained from them, killed after a checkpoint and
    re-run, ends with the weights of an uninterrupted run."""
    import time

    from helpers import MICRO, ROOT, kill_group, run_stages, start_killable, write_config
    from safetensors.torch import load_file

    # Stages 0-1 done (their markers still match); stage 2 to be made with shards.
    shutil.copytree(tiny_data, tmp_path / "data", ignore=shutil.ignore_patterns("augment", "stage2_*"))
    over = MICRO + ["train.deterministic=true", "loader.shards=true", "loader.shard_size=10",
                    "loader.batches_per_epoch=8", "train.phases=[{name: main, epochs: 1, lr: 0.005, "
                    "checkpoint_every_steps: 2, average_last: 1}]"]
    write_config(tmp_path / "cfg.yaml", over)
    proc = run_stages(tmp_path, 2, 2)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(list((tmp_path / "data" / "shards" / "train").glob("shar/recording.*.tar"))) == 6

    def train(exp):
        return ["python", "-m", "voxadapt.stages", "train", "--config", str(tmp_path / "cfg.yaml"),
                "--data", str(tmp_path / "data"), "--exp", str(exp)]

    env = {"PYTHONPATH": str(ROOT)}
    whole = start_killable(train(tmp_path / "a"), ROOT, env)
    out, _ = whole.communicate(timeout=600)
    assert whole.returncode == 0 and "180 examples" in out and "first batch after" in out, out[-2000:]
    killed = start_killable(train(tmp_path / "b"), ROOT, env)
    ckpt = tmp_path / "b" / "mhfa_tiny" / "main" / "checkpoints" / "ckpt-000000004.pt"
    deadline = time.time() + 300
    while time.time() < deadline and not ckpt.exists() and killed.poll() is None:
        time.sleep(0.02)
    kill_group(killed)
    resumed = start_killable(train(tmp_path / "b"), ROOT, env)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0 and "resuming from ckpt-" in out, out[-2000:]
    a, b = (load_file(tmp_path / e / "mhfa_tiny" / "main" / "final" / "model.safetensors") for e in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_missing_or_incomplete_shards_are_named(sharded, tmp_path):
    with pytest.raises(DataError, match=r"index.tsv: missing; run stage 2 with loader.shards: true"):
        ExampleTable.from_shards(tmp_path, 16000)
    _, shards = sharded
    partial = tmp_path / "partial"
    shutil.copytree(shards, partial)
    lines = (partial / "index.tsv").read_text().splitlines()
    (partial / "index.tsv").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(DataError, match=r"no entry for utterance '.+'; the shards are incomplete: re-run stage 2"):
        ExampleTable.from_shards(partial, 16000)
    with pytest.raises(Exception, match="loader.shards needs sampler: utterance"):
        load_config(None, ["loader.shards=true", "loader.sampler=distinct_speakers"])
