"""The packaged model: `voxadapt` command, Python API, ONNX export, adapters-only packages."""

from __future__ import annotations

import subprocess
import sys

import kaldiio
import numpy as np
import pytest
import soundfile as sf
from helpers import ROOT, assert_clean_error, write_wav

pytestmark = pytest.mark.slow


def voxadapt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxadapt", *args], capture_output=True, text=True, cwd=ROOT)


def test_api_embed_and_verify(package, wavs):
    import voxadapt

    model = voxadapt.load(package)
    x, sr = sf.read(wavs[0], dtype="float32")
    assert sr == model.sample_rate
    np.testing.assert_allclose(model.embed(wavs[0]), model.embed(x, sample_rate=sr), atol=1e-6)
    same, other = model.verify(wavs[0], wavs[0]), model.verify(wavs[0], wavs[1])
    assert same.method == model.manifest["default_method"] and same.score >= other.score
    assert same.threshold == 0.0 and same.accept and same.llr >= other.llr  # even odds by default
    assert model.verify(wavs[0], wavs[1], p_target=0.01).threshold == pytest.approx(np.log(99))
    assert voxadapt.load(package, method="cosine").verify(wavs[0], wavs[0]).score == pytest.approx(1.0, abs=1e-5)


def test_cli_embed_verify_score(package, wavs, micro_pipeline, tmp_path):
    proc = voxadapt("embed", str(package), wavs[0], wavs[1])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(wavs[0] + "  [ ")
    out = f"ark,scp:{tmp_path / 'e.ark'},{tmp_path / 'e.scp'}"
    assert voxadapt("embed", str(package), wavs[0], "--out", out).returncode == 0
    import voxadapt as api

    vec = dict(kaldiio.load_scp(str(tmp_path / "e.scp")))[wavs[0]]
    np.testing.assert_allclose(vec, api.load(package).embed(wavs[0]), atol=1e-6)
    proc = voxadapt("verify", str(package), wavs[0], wavs[0], "--method", "plda")
    assert proc.returncode == 0 and "llr" in proc.stdout and "-> accept: same speaker" in proc.stdout
    scp = micro_pipeline / "exp" / "mhfa_tiny" / "embeddings" / "test" / "xvector.scp"
    proc = voxadapt("score", str(package), "--trials", str(micro_pipeline / "data" / "test" / "trials"),
                    "--scp", str(scp), "--out", str(tmp_path / "s"))
    assert proc.returncode == 0 and "EER" in proc.stderr
    assert len((tmp_path / "s").read_text().splitlines()) == 120


def test_onnx_matches_pytorch(package, wavs):
    import onnxruntime as ort

    import voxadapt as api

    model = api.load(package)
    session = ort.InferenceSession(str(package / "model.onnx"), providers=["CPUExecutionProvider"])
    for w in wavs:
        x, _ = sf.read(w, dtype="float32")
        a = session.run(None, {"waveform": x[None]})[0][0]
        b = model.embed(x, sample_rate=model.sample_rate)
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.9999


def test_cli_int8_embed_and_export(package, wavs, tmp_path):
    """`embed --engine onnx-int8` (checked on the first inputs) writes float32 vectors within
    cosine INT8_COSINE of fp32's; `export-onnx --int8` writes a graph with int8 matrix multiplies."""
    import onnx

    import voxadapt as api
    from voxadapt.onnx_export import INT8_COSINE

    out = f"ark,scp:{tmp_path / 'e.ark'},{tmp_path / 'e.scp'}"
    proc = voxadapt("embed", str(package), wavs[0], wavs[1], "--engine", "onnx-int8", "--out", out)
    assert proc.returncode == 0 and "differ from fp32" not in proc.stderr, proc.stderr
    model = api.load(package)
    for w, vec in kaldiio.load_scp_sequential(str(tmp_path / "e.scp")):
        want = model.embed(w)
        assert vec.dtype == np.float32 and float(vec @ want / np.linalg.norm(vec) / np.linalg.norm(want)) >= INT8_COSINE
    proc = voxadapt("export-onnx", str(package), str(tmp_path / "m8.onnx"), "--int8")
    assert proc.returncode == 0 and "int8 vs fp32 cosine" in proc.stdout, proc.stderr
    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(tmp_path / "m8.onnx")).graph.node}


def test_bad_inputs(package, wavs, tmp_path):
    assert_clean_error(voxadapt("verify", str(tmp_path), wavs[0], wavs[1]), "not a packaged voxadapt model")
    (tmp_path / "noise.wav").write_text("not audio at all")
    assert_clean_error(voxadapt("verify", str(package), wavs[0], str(tmp_path / "noise.wav")), "not readable audio")
    stereo = write_wav(tmp_path / "stereo.wav", 2.0, channels=2)
    assert_clean_error(voxadapt("embed", str(package), str(stereo)), "2 channels; pick one with --channel")
    assert voxadapt("embed", str(package), str(stereo), "--channel", "1").returncode == 0
    narrow = write_wav(tmp_path / "8k.wav", 2.0, sr=8000)
    assert_clean_error(voxadapt("embed", str(package), str(narrow)), "8000 Hz audio", "--allow-upsample")
    assert voxadapt("embed", str(package), str(narrow), "--allow-upsample").returncode == 0
    assert_clean_error(voxadapt("embed", str(package), str(tmp_path / "missing.wav")), "audio file not found")
    assert_clean_error(voxadapt("embed", str(package), "no/such.wav"), "no/such.wav: audio file not found",
                       f"a relative path: read from {ROOT}")
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(package, broken)
    (broken / "model.safetensors").unlink()
    assert_clean_error(voxadapt("embed", str(broken), wavs[0]), "model.safetensors: missing")


def test_adapters_only_package(micro_pipeline, tmp_path):
    import shutil

    import torch
    from helpers import MICRO

    import voxadapt as api
    from voxadapt.config import load_config
    from voxadapt.models.backbone import build_hf_model
    from voxadapt.models.speaker import build_model, save_model_dir
    from voxadapt.package import make_package

    base = tmp_path / "base"
    cfg0 = load_config(None, MICRO)
    build_hf_model("wavlm", "", cfg0.model.backbone.arch, 0).save_pretrained(base)
    cfg = load_config(None, MICRO + [f"model.backbone.path={base}", "model.backbone.arch={}", "model.backbone.normalize_waveform=false",
                                     "model.adapters.inner=true",
                                     "model.adapters.bottleneck=4"])
    model, head = build_model(cfg, 36)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("up.weight"):
                p.normal_(0, 0.05)
    exp = tmp_path / "exp"
    save_model_dir(exp / "model", cfg, model, head, [f"c{i}" for i in range(36)])
    shutil.copytree(micro_pipeline / "exp" / "mhfa_tiny" / "backend", exp / "backend")
    make_package(exp / "model", exp / "backend", exp / "results.json", tmp_path / "pkg", adapters_only=True)
    pkg = tmp_path / "pkg"
    assert not (pkg / "model.safetensors").exists() and (pkg / "adapters.safetensors").stat().st_size < \
        (exp / "model" / "model.safetensors").stat().st_size
    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    model.eval()
    from voxadapt.data.conditioning import normalize_level

    with torch.no_grad():  # embed() scales every input to the configured level first
        want = model(torch.from_numpy(normalize_level(wav, cfg.extract.level_dbfs))[None]).numpy()[0]
    np.testing.assert_allclose(api.load(pkg).embed(wav, sample_rate=16000), want, atol=1e-5)
