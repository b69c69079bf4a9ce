"""Stage 5: x-vectors to Kaldi ark/scp through the JOB=1:N launcher; merge, checks, resume."""

from __future__ import annotations

import dataclasses
import re

import kaldiio
import numpy as np
import pytest
import torch
from helpers import MICRO, assert_clean_error, run_py, run_sh, venv_env, write_config

from voxadapt.config import load_config
from voxadapt.data.audio import read_utterance
from voxadapt.data.conditioning import normalize_level
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.embed import chunk_bounds, embed_waveforms
from voxadapt.models.loading import load_speaker_model
from voxadapt.models.speaker import build_model, save_model_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def micro_exp(tmp_path_factory):
    """exp/mhfa_tiny/model: a (random) micro model, as stage 4 would publish it."""
    root = tmp_path_factory.mktemp("xv")
    cfg = load_config(None, MICRO)
    model, head = build_model(cfg, 36)
    save_model_dir(root / "exp" / "mhfa_tiny" / "main" / "final", cfg, model, head, [f"c{i}" for i in range(36)])
    (root / "exp" / "mhfa_tiny" / "model").symlink_to("main/final")
    write_config(root / "micro.yaml", MICRO)
    return root


def stage5(micro_exp, tiny_data, nj="2", extra_env=None):
    return run_sh("run.sh", "--stage", "5", "--stop_stage", "5", "--config", str(micro_exp / "micro.yaml"),
                  "--nj", nj, "--data", str(tiny_data), "--exp", str(micro_exp / "exp"),
                  env={**venv_env(), **(extra_env or {})})


@pytest.fixture(scope="module")
def extracted(micro_exp, tiny_data):
    proc = stage5(micro_exp, tiny_data)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return micro_exp / "exp" / "mhfa_tiny" / "embeddings"


def test_xvectors_read_back_and_equal_unbatched_embeddings(extracted, micro_exp, tiny_data, tmp_path):
    """The default engine (onnx-int8) passed its check once per set, before the jobs, and both jobs
    embedded with that one graph (removed once the set is merged); its x-vectors are the int8
    graph's embeddings of the conditioned utterances, float32, within INT8_COSINE of PyTorch's."""
    from voxadapt import onnx_export

    d = DataDir.load(tiny_data / "test")
    vectors = dict(kaldiio.load_scp_sequential(str(extracted / "test" / "xvector.scp")))
    assert sorted(vectors) == d.utterance_ids
    assert (extracted / "test" / "xvector.scp").read_text().splitlines()[0].startswith(d.utterance_ids[0] + " ")
    for job in (1, 2):
        log = (extracted / "test" / "log" / f"extract.{job}.log").read_text()
        assert f"job {job}: embedding with {extracted / 'test' / 'engine' / 'embedder.int8.onnx'}" in log, log
        assert "int8 graph: cosine" not in log  # checked by the split step, not again by each job
    assert not (extracted / "test" / "engine").exists()
    loaded = load_speaker_model(micro_exp / "exp" / "mhfa_tiny" / "model")
    model, cfg = loaded.model, loaded.cfg
    onnx_export.export_onnx(model, tmp_path / "model.onnx", 16000, None)
    onnx_export.quantize_int8(tmp_path / "model.onnx", tmp_path / "model.int8.onnx")
    int8 = onnx_export.OnnxEmbedder(tmp_path / "model.int8.onnx", 1)
    for utt in d.utterance_ids[:6]:
        x = normalize_level(read_utterance(d, utt), cfg.extract.level_dbfs)  # stage 5 scales every utterance first
        with torch.no_grad():
            single, fp32 = int8(torch.from_numpy(x)[None]).numpy()[0], model(torch.from_numpy(x)[None]).numpy()[0]
        assert vectors[utt].dtype == np.float32
        np.testing.assert_allclose(vectors[utt], single, atol=1e-5)
        assert fp32 @ single / np.linalg.norm(fp32) / np.linalg.norm(single) >= onnx_export.INT8_COSINE


def test_padded_batches_equal_single_utterances(micro_exp, tiny_data):
    # Stage 5 on a CPU embeds one piece per batch; on a GPU pieces of similar length share a batch,
    # padded and masked. Force wide batches here: every embedding must still equal the single one.
    d = DataDir.load(tiny_data / "test")
    loaded = load_speaker_model(micro_exp / "exp" / "mhfa_tiny" / "model")
    model, cfg = loaded.model, loaded.cfg
    audio = [normalize_level(read_utterance(d, u), cfg.extract.level_dbfs) for u in d.utterance_ids[:8]]
    assert len({len(a) for a in audio}) > 1
    opts = dataclasses.replace(cfg.extract, batch_seconds=200.0, max_padding=10.0)
    got = embed_waveforms(model, audio, 16000, opts)
    with torch.no_grad():
        want = np.stack([model(torch.from_numpy(a)[None]).numpy()[0] for a in audio])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_onnx_engine_embeds_as_pytorch_does(micro_exp, tiny_data):
    """Stage 5's CPU engine: the exported graph through onnxruntime, embeddings equal to PyTorch's
    to cosine 0.9999, for whole and chunked utterances; GPUs and engine torch keep PyTorch."""
    from voxadapt.onnx_export import OnnxEmbedder, extraction_engine

    d = DataDir.load(tiny_data / "test")
    loaded = load_speaker_model(micro_exp / "exp" / "mhfa_tiny" / "model")
    model, cfg = loaded.model, loaded.cfg
    audio = [normalize_level(read_utterance(d, u), cfg.extract.level_dbfs) for u in d.utterance_ids[:6]]
    audio.append(np.tile(np.concatenate(audio), 20)[: int(16000 * 1.5 * cfg.extract.max_chunk_seconds)])
    engine = extraction_engine(model, "cpu", "auto", 16000, 2)
    assert isinstance(engine, OnnxEmbedder)
    got = embed_waveforms(engine, audio, 16000, cfg.extract)
    want = embed_waveforms(model, audio, 16000, cfg.extract)
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.9999, cosine
    assert extraction_engine(model, "cpu", "torch", 16000, 2) is model
    for engine in ("auto", "onnx", "onnx-int8"):  # the CPU engines are speed-ups: a GPU run never fails on them
        assert extraction_engine(model, "cuda", engine, 16000, 2) is model


def test_int8_engine_is_used_only_when_it_matches_fp32_on_the_set(micro_exp, tiny_data, tmp_path, monkeypatch, caplog):
    """extract.engine onnx-int8: the graph quantised, checked on utterances of the set; a graph
    whose embeddings fall below INT8_COSINE is refused with a warning naming the cosine, and the
    fp32 graph embeds instead."""
    import onnx

    from voxadapt import onnx_export
    from voxadapt.embed import probe_waveforms

    d = DataDir.load(tiny_data / "test")
    loaded = load_speaker_model(micro_exp / "exp" / "mhfa_tiny" / "model")
    model, cfg = loaded.model, loaded.cfg
    audio = [read_utterance(d, u) for u in d.utterance_ids[:3]]
    probes = probe_waveforms(audio, 16000, cfg.extract)
    graph = tmp_path / "model.onnx"
    onnx_export.export_onnx(model, graph, 16000, None)
    fp32 = embed_waveforms(onnx_export.OnnxEmbedder(graph, 1), audio, 16000, cfg.extract)

    def cosines(got: np.ndarray) -> np.ndarray:
        return (got * fp32).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(fp32, axis=1)

    got = embed_waveforms(onnx_export.extraction_engine(model, "cpu", "onnx-int8", 16000, 1, graph, probes), audio,
                          16000, cfg.extract)
    assert not np.array_equal(got, fp32) and cosines(got).min() >= onnx_export.INT8_COSINE

    quantize = onnx_export.quantize_int8

    def damaged(fp32_graph, out):  # noqa: ANN001, ANN202 - an int8 graph that has lost accuracy
        quantize(fp32_graph, out)
        m = onnx.load(str(out))
        rng = np.random.default_rng(0)
        for init in m.graph.initializer:
            w = onnx.numpy_helper.to_array(init)
            if w.dtype == np.float32 and w.size > 100:
                init.CopyFrom(onnx.numpy_helper.from_array(rng.permutation(w.ravel()).reshape(w.shape), init.name))
        onnx.save(m, str(out))

    monkeypatch.setattr(onnx_export, "quantize_int8", damaged)
    caplog.clear()
    got = embed_waveforms(onnx_export.extraction_engine(model, "cpu", "onnx-int8", 16000, 1, graph, probes), audio,
                          16000, cfg.extract)
    np.testing.assert_array_equal(got, fp32)
    assert re.search(r"int8 graph's embeddings differ from fp32's \(cosine 0\.\d+ < 0\.999 on 3 utterances of the set\): "
                     r"using the fp32 graph", caplog.text), caplog.text


def test_int8_weights_use_seven_bits_so_kernels_without_vnni_cannot_saturate(micro_exp, tmp_path):
    """On a CPU without VNNI onnxruntime adds pairs of u8 x s8 products in 16 bits: full-range
    weights (up to 127) overflow there, 7-bit ones (up to 64) cannot (255 x 64 x 2 < 32,768)."""
    import onnx

    from voxadapt import onnx_export

    model = load_speaker_model(micro_exp / "exp" / "mhfa_tiny" / "model").model
    onnx_export.export_onnx(model, tmp_path / "model.onnx", 16000, None)
    onnx_export.quantize_int8(tmp_path / "model.onnx", tmp_path / "model.int8.onnx")
    graph = onnx.load(str(tmp_path / "model.int8.onnx"))
    weights = [onnx.numpy_helper.to_array(t) for t in graph.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(weights) >= 10  # the MatMul/Gemm weights
    assert max(int(np.abs(w.astype(np.int16)).max()) for w in weights) == 64


def test_a_graph_over_the_protobuf_limit_keeps_its_weights_in_one_file_beside_it(micro_exp, tiny_data, tmp_path):
    """A model whose weights exceed 2 GiB (w2v-BERT 2.0) is written as model.onnx + model.onnx.data
    (the limit is lowered here to reach that path with the micro model): the pair can be moved,
    embeds as the one-file graph does, quantises to int8, and a smaller model written over it
    takes the data file away."""
    import shutil

    from voxadapt import onnx_export

    d = DataDir.load(tiny_data / "test")
    loaded = load_speaker_model(micro_exp / "exp" / "mhfa_tiny" / "model")
    model, cfg = loaded.model, loaded.cfg
    audio = [normalize_level(read_utterance(d, u), cfg.extract.level_dbfs) for u in d.utterance_ids[:3]]
    inline = tmp_path / "inline" / "model.onnx"
    onnx_export.export_onnx(model, inline, 16000, None)
    assert sorted(p.name for p in inline.parent.iterdir()) == ["model.onnx"]
    split = tmp_path / "split" / "model.onnx"
    assert onnx_export.export_onnx(model, split, 16000, None, inline_limit=1000) >= onnx_export.PARITY_COSINE
    assert sorted(p.name for p in split.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    assert split.stat().st_size < inline.stat().st_size / 2  # the weights moved out (tensors under 1 kB stay)
    moved = tmp_path / "moved"
    shutil.copytree(split.parent, moved)
    shutil.rmtree(split.parent)
    want = embed_waveforms(onnx_export.OnnxEmbedder(inline, 1), audio, 16000, cfg.extract)
    got = embed_waveforms(onnx_export.OnnxEmbedder(moved / "model.onnx", 1), audio, 16000, cfg.extract)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    int8 = tmp_path / "int8.onnx"
    onnx_export.quantize_int8(moved / "model.onnx", int8)
    assert onnx_export.probe_cosine(onnx_export.OnnxEmbedder(moved / "model.onnx", 1),
                                    onnx_export.OnnxEmbedder(int8, 1), audio) >= onnx_export.INT8_COSINE
    onnx_export.export_onnx(model, moved / "model.onnx", 16000, None)
    assert sorted(p.name for p in moved.iterdir()) == ["model.onnx"]


def test_switching_the_engine_asks_for_re_extraction(extracted, micro_exp, tiny_data):
    """The engine, precision and int8 recipe are in stage 5's marker (int8 embeddings differ
    slightly): x-vectors of one engine or recipe are not taken for another's; a marker written
    before the engine was recorded is that of the defaults, one written by the int8 engine before
    its recipe was recorded is refused."""
    import json

    from voxadapt.errors import VoxadaptError
    from voxadapt.layout import dir_marker
    from voxadapt.onnx_export import INT8_RECIPE
    from voxadapt.stages.extract import run_merge

    cfg = load_config(micro_exp / "micro.yaml")
    where = (tiny_data / "test", micro_exp / "exp" / "mhfa_tiny" / "model", extracted / "test", 2)
    marker = dir_marker(extracted / "test")
    today = marker.read_text()
    recorded = json.loads(today)
    assert recorded["conditioning"]["int8"] == INT8_RECIPE
    del recorded["conditioning"]["int8"]  # int8 x-vectors of a version that did not record the recipe
    marker.write_text(json.dumps(recorded))
    try:
        with pytest.raises(VoxadaptError, match=re.escape(f'(conditioning.int8: "not recorded" -> "{INT8_RECIPE}")')):
            run_merge(cfg, *where, check_only=True)
        for key in ("engine", "precision"):
            del recorded["conditioning"][key]
        marker.write_text(json.dumps(recorded))
        cfg.extract.engine = "auto"  # the default before onnx-int8
        assert run_merge(cfg, *where, check_only=True) == 0
        cfg.extract.engine = "onnx-int8"  # today's default: the refusal names the change and its values
        with pytest.raises(VoxadaptError, match='made with different settings \\(conditioning.engine: "auto" -> "onnx-int8"'):
            run_merge(cfg, *where, check_only=True)
    finally:
        marker.write_text(today)  # the module's later tests re-run stage 5 with the defaults


def test_a_model_that_cannot_be_exported_embeds_with_pytorch(monkeypatch, caplog):
    from voxadapt import onnx_export

    def fails(*_args):  # noqa: ANN202
        raise RuntimeError("Cannot insert a Tensor that requires grad as a constant.\n<a 32x128 tensor>")

    monkeypatch.setattr(onnx_export, "export_onnx", fails)
    model, _ = build_model(load_config(None, MICRO), 5)
    assert onnx_export.extraction_engine(model, "cpu", "auto", 16000, 2) is model
    assert "could not be exported to ONNX (RuntimeError: Cannot insert a Tensor" in caplog.text
    assert "32x128" not in caplog.text  # one line, not the exporter's tensor dump


def test_a_job_run_without_the_split_steps_graph_makes_its_own(extracted, micro_exp, tiny_data, tmp_path, caplog):
    """A job started by hand (or on a CPU node when the split step saw a GPU) finds no prepared
    graph: it exports and checks one itself, on its own part of the set."""
    import logging

    from voxadapt.data.split import split_data_dir
    from voxadapt.stages.extract import run_job

    caplog.set_level(logging.INFO)
    cfg = load_config(micro_exp / "micro.yaml")
    run_job(cfg, micro_exp / "exp" / "mhfa_tiny" / "model", split_data_dir(tiny_data / "test", 2), tmp_path, 1)
    assert "int8 graph: cosine" in caplog.text and "embedding with" not in caplog.text
    want = dict(kaldiio.load_scp_sequential(str(extracted / "test" / "xvector.scp")))
    for utt, vec in kaldiio.load_scp_sequential(str(tmp_path / "xvector.1.scp")):
        np.testing.assert_allclose(vec, want[utt], atol=1e-6)


def test_a_class_token_model_is_extracted_with_its_onnx_graph(tiny_data, tmp_path):
    """The class token's encoder (nn.TransformerEncoderLayer) exports with a free time axis (torch's
    fused kernel and its multi-head attention would fix it to the traced length): stage 5 embeds
    with the graph, x-vectors equal to PyTorch's. (Whether int8 then passes its check depends on the
    weights: this random micro model's does not, a trained tiny one's does, cosine 0.99999.)"""
    from voxadapt.onnx_export import PARITY_COSINE

    cfg = load_config(None, MICRO + ["model.pooling.type=clstoken", "model.pooling.token_dim=32",
                                     "model.pooling.token_layers=1", "model.pooling.token_heads=2",
                                     "model.pooling.token_ffn=64"])
    model, head = build_model(cfg, 36)
    save_model_dir(tmp_path / "model", cfg, model, head, [f"c{i}" for i in range(36)])
    out = tmp_path / "xv"
    proc = run_sh("steps/extract_xvectors.sh", "--config", str(tmp_path / "model" / "config.yaml"),
                  "--set", "extract.engine=onnx", str(tmp_path / "model"), str(tiny_data / "test"), str(out),
                  env=venv_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"the jobs embed with {out / 'engine' / 'embedder.onnx'}" in proc.stderr, proc.stderr[-3000:]
    d = DataDir.load(tiny_data / "test")
    vectors = dict(kaldiio.load_scp_sequential(str(out / "xvector.scp")))
    assert sorted(vectors) == d.utterance_ids
    loaded = load_speaker_model(tmp_path / "model")
    for utt in d.utterance_ids[:4]:
        x = normalize_level(read_utterance(d, utt), cfg.extract.level_dbfs)
        with torch.no_grad():
            want = loaded.model(torch.from_numpy(x)[None]).numpy()[0]
        assert vectors[utt] @ want / np.linalg.norm(vectors[utt]) / np.linalg.norm(want) >= PARITY_COSINE


def test_the_split_steps_plan_survives_an_exporter_that_prints_and_fails(micro_exp, tiny_data, tmp_path):
    """The split step tells the shell its plan on stdout; the ONNX exporter prints its graph there
    (from C++) when it fails. The plan must stay two lines, and the jobs then embed with PyTorch."""
    import subprocess
    import sys

    from helpers import ROOT

    failing = ("import os, runpy, sys\n"
               "import voxadapt.onnx_export as onnx_export\n"
               "def export(*args, **kwargs):\n"
               "    os.write(1, b'Torch IR graph at exception: graph(%wav ...)\\n')\n"
               "    raise RuntimeError('Exporting the operator is not supported')\n"
               "onnx_export.export_onnx = export\n"
               "sys.argv = ['extract_xvectors.py'] + sys.argv[1:]\n"
               "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", failing, "split", "--model", str(micro_exp / "exp" / "mhfa_tiny" / "model"),
                           "--data-dir", str(tiny_data / "test"), "--out", str(tmp_path / "xv"), "--nj", "2"],
                          capture_output=True, text=True, cwd=ROOT / "pyscripts", env={**venv_env(), "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [str(tiny_data / "test" / "split2dur"), str(tmp_path / "xv" / "log" / "extract.JOB.log")]
    assert "could not be exported to ONNX (RuntimeError: Exporting the operator" in proc.stderr
    assert "the jobs embed with PyTorch" in proc.stderr


def test_the_jobs_graph_is_built_whole_for_its_inputs_and_removed_marker_first(micro_exp, tiny_data, tmp_path,
                                                                                 monkeypatch):
    """prepare_engine: a build cut short leaves nothing; a graph made for another model is not
    taken, and is built again; a prepared 'PyTorch' (no graph passed) is honoured; a removal cut
    after the marker leaves a directory no job takes; a GPU device the split step's node lacks is
    not checked there."""
    import shutil

    from voxadapt.stages import extract

    cfg = load_config(micro_exp / "micro.yaml")
    model, data, out = micro_exp / "exp" / "mhfa_tiny" / "model", tiny_data / "test", tmp_path / "xv"
    out.mkdir()
    real = extract.engine_graph

    def cut(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - killed after writing part of the graph
        (args[4] / "embedder.onnx").write_bytes(b"half a graph")
        raise KeyboardInterrupt

    monkeypatch.setattr(extract, "engine_graph", cut)
    with pytest.raises(KeyboardInterrupt):
        extract.prepare_engine(cfg, model, data, out)
    assert list(out.iterdir()) == [] and extract.prepared_engine(cfg, model, data, out) is False
    monkeypatch.setattr(extract, "engine_graph", real)
    extract.prepare_engine(cfg, model, data, out)
    assert extract.prepared_engine(cfg, model, data, out) == out / "engine" / "embedder.int8.onnx"

    other = tmp_path / "other"  # another model: the graph above is not its graph
    shutil.copytree(model, other)
    (other / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes() + b" ")
    assert extract.prepared_engine(cfg, other, data, out) is False
    monkeypatch.setattr(extract, "load_embedding_model", lambda *args: None)  # (not a loadable model: a digest)
    monkeypatch.setattr(extract, "engine_graph", lambda *args, **kwargs: None)  # no graph passes its checks
    extract.prepare_engine(cfg, other, data, out)
    assert extract.prepared_engine(cfg, other, data, out) is None  # the jobs embed with PyTorch

    (out / "engine" / "stray.onnx").write_bytes(b"")  # as if removal had stopped after the marker
    (out / "engine" / ".done.json").unlink()
    assert extract.prepared_engine(cfg, other, data, out) is False
    extract.remove_engine(out)
    assert not (out / "engine").exists()

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:3"):  # the jobs' GPU nodes are not this one: nothing built, nothing refused
        cfg.extract.device = device
        extract.prepare_engine(cfg, model, data, out)
    assert not (out / "engine").exists()


def test_speaker_means_and_counts(extracted, tiny_data):
    d = DataDir.load(tiny_data / "test")
    vectors = dict(kaldiio.load_scp_sequential(str(extracted / "test" / "xvector.scp")))
    means = dict(kaldiio.load_scp_sequential(str(extracted / "test" / "spk_xvector.scp")))
    for spk, utts in d.spk2utt.items():
        np.testing.assert_allclose(means[spk], np.mean([vectors[u] for u in utts], 0), atol=1e-6)
    counts = dict(line.split() for line in (extracted / "test" / "num_utts.ark").read_text().splitlines())
    assert counts == {s: str(len(u)) for s, u in d.spk2utt.items()}


def test_rerun_does_nothing_a_lost_merge_builds_no_graph_and_a_lost_job_is_redone_alone(extracted, micro_exp, tiny_data):
    again = stage5(micro_exp, tiny_data)
    assert again.returncode == 0 and again.stderr.count("already complete; nothing to do") == 3
    out = extracted / "dev"
    ark1 = (out / "xvector.1.ark").stat().st_mtime_ns
    before = (out / "xvector.scp").read_text()
    (out / "xvector.scp").unlink()  # as if the merge had been killed: every job is done
    (out / ".done.json").unlink()
    proc = stage5(micro_exp, tiny_data)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "the jobs embed with" not in proc.stderr  # no graph built that no job would use
    assert (out / "xvector.scp").read_text() == before and not (out / "engine").exists()
    (out / "xvector.2.scp").unlink()  # as if job 2 had been killed before finishing
    (out / ".done.json").unlink()
    proc = stage5(micro_exp, tiny_data)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "the jobs embed with" in proc.stderr  # job 2's graph, built by the split step
    assert "already complete" in (out / "log" / "extract.1.log").read_text()
    assert "x-vectors ->" in (out / "log" / "extract.2.log").read_text()
    assert (out / "xvector.1.ark").stat().st_mtime_ns == ark1
    assert (out / "xvector.scp").read_text() == before


def test_chunked_long_utterance(micro_exp):
    loaded = load_speaker_model(micro_exp / "exp" / "mhfa_tiny" / "model")
    model, cfg = loaded.model, loaded.cfg
    opts = cfg.extract
    opts.max_chunk_seconds, opts.chunk_overlap_seconds = 4.0, 1.0
    opts.level_dbfs = None  # the chunking alone (conditioning is tested in test_evaluate.py)
    x = np.random.default_rng(0).standard_normal(int(10.5 * 16000)).astype(np.float32) * 0.1
    bounds = chunk_bounds(len(x), 16000, opts)
    assert bounds[0] == (0, 64000) and bounds[-1][1] == len(x) and len(bounds) == 4
    got = embed_waveforms(model, [x, x[:16000]], 16000, opts)
    with torch.no_grad():
        want = np.mean([model(torch.from_numpy(x[s:e])[None]).numpy()[0] for s, e in bounds], 0)
        short = model(torch.from_numpy(x[:16000])[None]).numpy()[0]
    np.testing.assert_allclose(got[0], want, atol=1e-5)
    np.testing.assert_allclose(got[1], short, atol=1e-5)


def test_jobs_spread_over_the_gpus(micro_exp, tiny_data, tmp_path, monkeypatch):
    """extract.device cuda or auto: job n runs on cuda:(n-1) % G of the G GPUs this process sees
    (mocked); one visible GPU (CUDA_VISIBLE_DEVICES, or a Slurm job given one) puts every job on
    its own cuda:0; cuda:N is kept as given; no CPU graph is prepared for them."""
    import shutil

    from voxadapt.data.split import split_data_dir
    from voxadapt.stages import extract

    class Placed(Exception):
        pass

    def load(_model_dir, device):  # noqa: ANN001, ANN202 - the device the job chose; stop there
        raise Placed(device)

    shutil.copytree(tiny_data / "test", tmp_path / "test", ignore=shutil.ignore_patterns("split*"))
    split = split_data_dir(tmp_path / "test", 5)
    monkeypatch.setattr(extract, "load_embedding_model", load)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    model = micro_exp / "exp" / "mhfa_tiny" / "model"

    def devices(name: str, gpus: int) -> list[str]:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        cfg = load_config(None, MICRO + [f"extract.device={name}"])
        placed = []
        for job in range(1, 6):
            with pytest.raises(Placed) as err:
                extract.run_job(cfg, model, split, tmp_path / "xv", job)
            placed.append(err.value.args[0])
        return placed

    assert devices("cuda", 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert devices("auto", 3) == ["cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1"]
    assert devices("cuda", 1) == ["cuda:0"] * 5
    assert devices("cuda:1", 4) == ["cuda:1"] * 5
    # The split step sees the GPUs too: no graph is built for jobs that embed with PyTorch.
    extract.prepare_engine(load_config(None, MICRO), model, tmp_path / "test", tmp_path / "xv")
    assert not (tmp_path / "xv" / "engine").exists()


def test_launcher_names_the_failing_job(tmp_path):
    proc = run_sh("utils/run_local.sh", "JOB=1:3", str(tmp_path / "log" / "t.JOB.log"), "bash", "-c",
                  "echo job JOB; [ JOB != 2 ]")
    assert proc.returncode == 1 and f"1 / 3 failed, log is in {tmp_path}/log/t.2.log" in proc.stderr
    assert "job 3" in (tmp_path / "log" / "t.3.log").read_text()
    assert "# Ended (code 1)" in (tmp_path / "log" / "t.2.log").read_text()


def test_bad_inputs(micro_exp, tiny_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data / "test", data / "test", ignore=shutil.ignore_patterns("split*"))
    lines = (data / "test" / "wav.scp").read_text().splitlines()
    bad_utt = lines[3].split()[0]
    (tmp_path / "garbage.wav").write_text("not audio")
    lines[3] = f"{bad_utt} {tmp_path / 'garbage.wav'}"
    (data / "test" / "wav.scp").write_text("\n".join(lines) + "\n")
    from voxadapt.data.split import split_data_dir

    split = split_data_dir(data / "test", 2)
    model = micro_exp / "exp" / "mhfa_tiny" / "model"
    proc = run_py("extract_xvectors.py", "job", "--model", str(model), "--split-dir", str(split),
                  "--out", str(tmp_path / "xv"), "--job", "1")
    assert_clean_error(proc, f"utterance '{bad_utt}'", "cannot decode audio")
    assert not (tmp_path / "xv" / "xvector.1.scp").exists()
    proc = run_py("extract_xvectors.py", "job", "--model", str(tmp_path), "--split-dir", str(split),
                  "--out", str(tmp_path / "xv"), "--job", "2")
    assert_clean_error(proc, "not a trained voxadapt model directory")
    durations = DataDir.load(tiny_data / "test").utt2dur()
    shortest = min(durations, key=lambda u: (durations[u], u))  # one the split step checks the int8 graph on
    shutil.copytree(tiny_data / "test", data / "short", ignore=shutil.ignore_patterns("split*"))
    table = (data / "short" / "wav.scp").read_text()
    (data / "short" / "wav.scp").write_text(table.replace(DataDir.load(tiny_data / "test").wav_scp[shortest],
                                                          str(tmp_path / "garbage.wav")))
    proc = run_py("extract_xvectors.py", "split", "--model", str(model),
                  "--data-dir", str(data / "short"), "--out", str(tmp_path / "xs"), "--nj", "2")
    assert_clean_error(proc, f"utterance '{shortest}'", "cannot decode audio")
    assert not (tmp_path / "xs" / "engine").exists()
    proc = run_py("extract_xvectors.py", "split", "--model", str(model), "--data-dir", str(tiny_data / "test"),
                  "--out", str(tmp_path / "xv"), "--nj", "21")
    assert_clean_error(proc, "cannot split 20 utterances into 21 jobs", "--nj between 1 and 20")
    proc = run_py("extract_xvectors.py", "job", "--model", str(model), "--out", str(tmp_path / "xv"))
    assert_clean_error(proc, "job needs --split-dir")


@pytest.mark.parametrize("args, fragments", [
    (["m", "d", "x"], ["give --config"]),
    (["--config", "conf/mhfa_tiny.yaml", "--nj", "0", "m", "d", "x"], ["--nj '0' must be a whole number"]),
    (["--config", "conf/mhfa_tiny.yaml", "/nonexistent/model", "DATA", "OUT"], ["not a trained voxadapt model"]),
])
def test_extract_step_bad_arguments_are_one_line_errors_and_write_nothing(tiny_data, tmp_path, args, fragments):
    args = [str(tiny_data / "test") if a == "DATA" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    proc = run_sh("steps/extract_xvectors.sh", *args, env=venv_env())
    assert_clean_error(proc, *fragments)
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # the error alone: no shell noise after it
    assert not (tmp_path / "out").exists()
