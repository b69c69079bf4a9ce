"""The `voxadapt` command and API as a new user meets them: options anywhere, bad files among good
ones, durations and x-vector tables as the recipe writes them, experiment paths, near-silence,
arrays with their sample rate, embeddings to verify. The command runs in-process (cli()) to
save a start-up per call."""

from __future__ import annotations

import shutil
import subprocess
import sys

import kaldiio
import numpy as np
import pytest
import soundfile as sf
from helpers import ROOT, write_wav

from voxadapt.__main__ import cli
from voxadapt.errors import VoxadaptError


def dithered_silence(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """What `sox -n` writes to a 16-bit file: digital silence with +-1 step of triangular dither."""
    rng = np.random.default_rng(seed)
    steps = np.round(rng.uniform(-0.5, 0.5, int(seconds * sr)) + rng.uniform(-0.5, 0.5, int(seconds * sr)))
    return (steps / 32768).astype(np.float32)


def test_a_usage_error_and_a_missing_package_need_no_torch(tmp_path):
    code = ("import sys\nfrom voxadapt.__main__ import cli\nfrom voxadapt.errors import VoxadaptError\n"
            "try:\n    cli(['embed', sys.argv[1], 'a.wav'])\nexcept VoxadaptError as err:\n    print(err)\n"
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nope")], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.splitlines() == [f"{tmp_path / 'nope'}: not found; give a package (exp/<name>/package) or its "
                                        "experiment", "False"], proc.stderr


def test_package_dir_takes_a_package_or_its_experiment(tmp_path):
    from voxadapt.layout import package_dir

    exp = tmp_path / "exp" / "mhfa"
    (exp / "package").mkdir(parents=True)
    (exp / "config.yaml").write_text("name: mhfa\n")
    with pytest.raises(VoxadaptError, match="an experiment without a package; make one with ./run.sh --stage 8"):
        package_dir(exp)
    (exp / "package" / "voxadapt-model.json").write_text("{}")
    assert package_dir(exp) == exp / "package" and package_dir(exp / "package") == exp / "package"
    with pytest.raises(VoxadaptError, match="mhfz: not found"):
        package_dir(tmp_path / "exp" / "mhfz")



@pytest.mark.slow
def test_options_anywhere_and_an_experiment_for_its_package(package, wavs, micro_pipeline, tmp_path, capsys):
    exp = str(package.parent)
    assert cli(["embed", exp, "--vad", wavs[0], "--channel", "0", wavs[1]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == wavs[:2]
    assert cli(["verify", "--json", str(package), wavs[0], "--p-target", "0.01", wavs[0]]) == 0
    assert '"p_target": 0.01' in capsys.readouterr().out
    test = micro_pipeline / "data" / "test"
    scp = micro_pipeline / "exp" / "mhfa_tiny" / "embeddings" / "test" / "xvector.scp"
    assert cli(["score", "--trials", str(test / "trials"), str(package), "--out", str(tmp_path / "s"),
                "--scp", str(scp)]) == 0
    assert len((tmp_path / "s").read_text().splitlines()) == len((test / "trials").read_text().splitlines())


@pytest.mark.slow
def test_skip_bad_embeds_the_rest_and_names_what_it_skipped(package, wavs, tmp_path, capsys, monkeypatch):
    audio = tmp_path / "audio"
    for i, w in enumerate(wavs[:2]):
        (audio / "good").mkdir(parents=True, exist_ok=True)
        shutil.copy(w, audio / "good" / f"{i}.wav")
    short = write_wav(audio / "short.wav", 0.1)
    sf.write(audio / "hiss.wav", dithered_silence(2.0), 16000, subtype="PCM_16")
    out = f"ark,scp:{tmp_path / 'e.ark'},{tmp_path / 'e.scp'}"
    monkeypatch.setattr("voxadapt.__main__.EMBED_CHUNK", 1)  # the good files are written before the bad one
    with pytest.raises(VoxadaptError, match="hiss.wav: silent .*; or pass --skip-bad to embed the other files"):
        cli(["embed", str(package), str(audio), "--out", out])
    assert not (tmp_path / "e.ark").exists() and not (tmp_path / "e.scp").exists()  # nothing half-written
    assert cli(["embed", str(package), "--skip-bad", str(audio), "--out", out]) == 0
    assert sorted(kaldiio.load_scp(str(tmp_path / "e.scp"))) == sorted(str(audio / "good" / f"{i}.wav") for i in range(2))
    err = capsys.readouterr().err
    assert f"skipped: {short}: only 0.100 s" in err and f"skipped: {audio / 'hiss.wav'}: silent" in err
    assert "embedded 2 of 4 files, skipped 2 (listed above)" in err
    with pytest.raises(VoxadaptError, match="embedded 0 of 2 files, skipped 2"):
        cli(["embed", str(package), str(short), str(audio / "hiss.wav"), "--skip-bad", "--out", f"ark:{tmp_path / 'n.ark'}"])
    assert not (tmp_path / "n.ark").exists()


@pytest.mark.slow
def test_score_takes_durations_and_x_vector_tables_as_the_recipe_writes_them(package, micro_pipeline, tmp_path, capsys):
    test = micro_pipeline / "data" / "test"
    emb = micro_pipeline / "exp" / "mhfa_tiny" / "embeddings" / "test"
    base = ["score", str(package), "--trials", str(test / "trials")]

    def scores(*args: str) -> list[str]:
        out = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
        assert cli([*base, *args, "--out", str(out)]) == 0
        return out.read_text().splitlines()

    # Without durations this duration-aware calibration gives no LLRs: said in one line, not silently.
    plain = scores("--scp", str(emb / "xvector.scp"))
    assert len(plain[0].split()) == 3
    assert "WARNING: no LLRs" in capsys.readouterr().err
    # The data dir (its reco2dur), its reco2dur, and a segmented copy of it.
    with_llr = scores("--scp", str(emb / "xvector.scp"), "--utt2dur", str(test))
    assert len(with_llr[0].split()) == 4 and [s.split()[:3] for s in with_llr] == [s.split() for s in plain]
    assert scores("--scp", str(emb / "xvector.scp"), "--utt2dur", str(test / "reco2dur")) == with_llr
    seg = tmp_path / "segmented"
    seg.mkdir()
    for name in ("utt2spk", "spk2utt"):
        shutil.copy(test / name, seg / name)
    wav = dict(line.split(maxsplit=1) for line in (test / "wav.scp").read_text().splitlines())
    dur = dict(line.split() for line in (test / "reco2dur").read_text().splitlines())
    (seg / "wav.scp").write_text("".join(f"r_{u} {p}\n" for u, p in wav.items()))
    (seg / "reco2dur").write_text("".join(f"r_{u} {d}\n" for u, d in dur.items()))
    (seg / "segments").write_text("".join(f"{u} r_{u} 0 -1\n" for u in wav))
    assert scores("--scp", str(emb / "xvector.scp"), "--utt2dur", str(seg)) == with_llr
    with pytest.raises(VoxadaptError, match="durations of recordings, but the dir has segments; give the data dir"):
        cli([*base, "--scp", str(emb / "xvector.scp"), "--utt2dur", str(seg / "reco2dur")])
    # x-vectors as an archive, an rspecifier or a pipe, for every table the command reads.
    vectors = dict(kaldiio.load_scp(str(emb / "xvector.scp")))
    with kaldiio.WriteHelper(f"ark:{tmp_path / 'xvector.1.ark'}") as w:
        for key, vec in vectors.items():
            w(key, vec)
    ark = str(tmp_path / "xvector.1.ark")
    for spec in (ark, f"ark:{ark}", f"ark:cat {ark} |", f"scp:{emb / 'xvector.scp'}"):
        assert scores("--scp", spec, "--utt2dur", str(test)) == with_llr, spec
    assert scores("--scp", ark, "--enroll-scp", f"ark:{ark}", "--cohort-scp", f"scp:{emb / 'xvector.scp'}",
                  "--utt2dur", str(test))


@pytest.mark.slow
def test_near_silence_is_refused_and_quiet_speech_is_not(package, wavs):
    import voxadapt

    model = voxadapt.load(package)
    with pytest.raises(VoxadaptError, match="waveform: silent"):
        model.embed(dithered_silence(2.0), sample_rate=16000)
    x, sr = sf.read(wavs[0], dtype="float32")
    quiet = np.round(x * 10 ** (-30 / 20) * 32767) / 32767  # 30 dB down, in a 16-bit file
    assert np.isfinite(model.embed(quiet, sample_rate=sr)).all()


@pytest.mark.slow
def test_api_sample_rates_embeddings_and_its_own_argument_names(package, wavs, tmp_path):
    from scipy.signal import resample_poly

    import voxadapt

    model = voxadapt.load(package.parent)  # the experiment: its package
    x, sr = sf.read(wavs[0], dtype="float32")
    with pytest.raises(VoxadaptError, match=r"give the array's rate with sample_rate=SR"):
        model.embed(x)
    at_44k = resample_poly(x, 441, 160).astype(np.float32)
    a, b = model.embed(x, sample_rate=sr), model.embed(at_44k, sample_rate=44100)
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.99
    with pytest.raises(VoxadaptError, match="8000 Hz audio.*pass allow_upsample=True"):
        model.embed(x[::2], sample_rate=8000)
    # Embeddings verify like the audio they came from (durations for this duration-aware calibration).
    v0, v1 = model.embed(wavs[0]), model.embed(wavs[1])
    seconds = (sf.info(wavs[0]).duration, sf.info(wavs[1]).duration)
    from_audio, from_vectors = model.verify(wavs[0], wavs[1]), model.verify(v0, v1, durations=seconds)
    assert from_vectors.score == pytest.approx(from_audio.score, abs=1e-5)
    assert from_vectors.llr == pytest.approx(from_audio.llr, abs=1e-4)
    with pytest.raises(VoxadaptError, match=r"needs the duration of each side: give durations="):
        model.verify(v0, v1)
    stereo = write_wav(tmp_path / "stereo.wav", 1.0, channels=2)
    with pytest.raises(VoxadaptError, match="2 channels; pick one with channel=N"):
        model.embed(stereo)
    assert model.verify.__doc__ and model.embed_many.__doc__
    # MP3: read, and found in directories by the command.
    mp3 = tmp_path / "mp3" / "a.mp3"
    mp3.parent.mkdir()
    sf.write(mp3, x, sr, format="MP3")
    assert model.embed(mp3).shape == v0.shape
    assert cli(["embed", str(package), str(mp3.parent)]) == 0
