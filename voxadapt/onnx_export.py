"""ONNX export of waveform -> embedding (SSL backbone with adapters, pooling), dynamic length,
and the exported graph as an onnxruntime engine for extraction on a CPU.

Weight parametrizations are folded first: LoRA deltas (W + s B A) and the backbone's weight-norm
positional convolution become plain weights. The TorchScript-based exporter keeps the input
length dynamic through the CNN and the relative position bias; the graph takes one utterance
(1, samples) float32 at the model's sample rate, scales it to the configured level, and returns
(1, embed_dim).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from voxadapt.errors import VoxadaptError
from voxadapt.fileio import atomic_path
from voxadapt.models.adapters import merge_lora
from voxadapt.models.speaker import SpeakerModel

log = logging.getLogger(__name__)


class WaveformToEmbedding(nn.Module):
    """The model behind the level normalisation every embedding gets (data/conditioning.py), so the
    graph takes waveforms as recorded, as `voxadapt embed` does."""

    def __init__(self, model: SpeakerModel, level_dbfs: float | None):
        super().__init__()
        self.model = model
        self.gain = None if level_dbfs is None else 10 ** (level_dbfs / 20)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if self.gain is not None:
            wav = wav * (self.gain / wav.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-12))
        states, _ = self.model.backbone(wav)
        return self.model.pooling(states, None)


# A protobuf file holds at most 2 GiB: a graph with more weights (w2v-BERT 2.0: 2.3 GB) keeps them in
# one file beside it, `<graph>.data`, which the graph names by a relative path.
PROTOBUF_LIMIT = 2**31 - 1


def external_data(graph: Path) -> Path:
    """The file that holds `graph`'s weights when they do not fit in it (see PROTOBUF_LIMIT)."""
    return graph.with_name(graph.name + ".data")


def _write_graph(exported: Path, out: Path, inline_limit: int) -> None:
    """Write the exporter's graph as `out`, its weights inside when they fit in `inline_limit`
    bytes, else in external_data(out). The exporter writes a large graph's weights as one file per
    tensor next to it; one file named after the graph is what users can copy. Both are written
    in a temporary directory and moved into place, the graph last: neither is ever half-written."""
    import onnx

    data = external_data(out)
    one_file = [p.name for p in exported.parent.iterdir()] == [exported.name]
    if one_file and exported.stat().st_size <= inline_limit:  # the usual case: moved as it is, not re-read
        os.replace(exported, out)
        data.unlink(missing_ok=True)  # a larger model's weights, written here before
        return
    proto = onnx.load(str(exported))  # with its external weights
    inline = sum(len(t.raw_data) for t in proto.graph.initializer) <= inline_limit
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        staged = Path(tmp) / out.name
        if inline:
            onnx.save_model(proto, str(staged))
        else:
            onnx.save_model(proto, str(staged), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data.name)
            os.replace(external_data(staged), data)
        os.replace(staged, out)
    if inline:
        data.unlink(missing_ok=True)  # a larger model's weights, written here before


def export_onnx(model: SpeakerModel, out: Path, sample_rate: int, level_dbfs: float | None,
                inline_limit: int = PROTOBUF_LIMIT) -> float:
    """Write `out` (with external_data(out) when the weights exceed `inline_limit` bytes) and check
    it with onnxruntime; returns the cosine between ONNX and PyTorch."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise VoxadaptError("ONNX export needs onnx and onnxruntime (pip install -r requirements.txt)") from None
    wrapped = WaveformToEmbedding(copy.deepcopy(model).cpu(), level_dbfs)
    merge_lora(wrapped)
    for p in wrapped.parameters():
        p.requires_grad_(False)
    wrapped.eval()  # the exporter restores the wrapper's mode recursively: it must be eval already
    example = torch.randn(1, 3 * sample_rate) * 0.1
    probe = torch.randn(1, int(4.7 * sample_rate)) * 0.1  # another length than the traced one
    with torch.no_grad():
        b = wrapped(probe).numpy()[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        exported = Path(tmp) / "exported.onnx"
        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)  # a fused kernel with no ONNX form (the class token's encoder)
        try:
            with warnings.catch_warnings(), torch.no_grad(), _stdout_silenced():
                warnings.simplefilter("ignore")  # tracer notes about Python ints from shapes (kept dynamic here)
                torch.onnx.export(wrapped, (example,), str(exported), input_names=["waveform"],
                                  output_names=["embedding"], dynamic_axes={"waveform": {1: "samples"}},
                                  dynamo=False, opset_version=17)
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
        del wrapped  # the model's copy: freed before _write_graph loads the graph's weights again
        _write_graph(exported, out, inline_limit)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    a = session.run(None, {"waveform": probe.numpy()})[0][0]
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


PARITY_COSINE = 0.9999  # an exported graph whose embedding differs more from PyTorch's is not used
# An int8 graph is used only when its embeddings of the probes (utterances of the set being
# embedded) are this close to the fp32 graph's; docs/extraction_engines.md has the measurements.
INT8_COSINE = 0.999
# What quantize_int8 quantises, chosen by measurement (docs/extraction_engines.md): the transformer's
# MatMul/Gemm with int8 weights per output channel and activations quantised per call (dynamic, no
# calibration set). The convolutions stay fp32: quantised (per call or with calibrated ranges) they
# lose the pauses of speech (cosine 0.87-0.99 to fp32 on speech, where noise passes).
INT8_OPS = ("MatMul", "Gemm")
# The weights use 7 of the 8 bits. Without VNNI (AVX2 only) onnxruntime's u8 x s8 kernels add two
# products in 16 bits, which saturate with full-range weights (the shipped tiny model's embeddings
# fell to cosine 0.962 to fp32 on such a CPU); 7-bit weights cannot overflow there, and CPUs with
# and without VNNI then compute the same integer products.
INT8_REDUCE_RANGE = True
# What stage 5's marker records for the int8 engine: a change of the recipe re-extracts rather than
# mixing x-vectors of two graphs in a set.
INT8_RECIPE = "7-bit weights, MatMul/Gemm"


def quantize_int8(graph: Path, out: Path, ops: Sequence[str] = INT8_OPS, per_channel: bool = True,
                  reduce_range: bool = INT8_REDUCE_RANGE) -> None:
    """Write `out`: the fp32 graph with `ops` quantised (onnxruntime's dynamic quantisation; the
    other choices are for benchmarks/extraction.py's comparison)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quant_log = logging.getLogger()  # the quantiser advises pre-processing on the root logger, every call
    level = quant_log.level
    quant_log.setLevel(logging.ERROR)
    try:
        with atomic_path(out) as tmp:
            quantize_dynamic(graph, tmp, op_types_to_quantize=list(ops), per_channel=per_channel,
                             reduce_range=reduce_range, weight_type=QuantType.QInt8)
    finally:
        quant_log.setLevel(level)


class OnnxEmbedder:
    """The speaker model as an onnxruntime session, called as `embed_waveforms` calls the PyTorch
    model: (B, samples) waveforms (lengths per row, or None) -> (B, E) embeddings. The graph takes
    one utterance, so a batch runs row by row; on a CPU the extraction path sends one at a time."""

    def __init__(self, graph: Path, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])

    def __call__(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        rows = [wav[i:i + 1, : wav.shape[1] if lengths is None else int(lengths[i])].numpy() for i in range(len(wav))]
        return torch.from_numpy(np.concatenate([self.session.run(None, {"waveform": r})[0] for r in rows]))


def probe_cosine(a: Callable[..., torch.Tensor], b: Callable[..., torch.Tensor], probes: Sequence[np.ndarray]) -> float:
    """The smallest cosine between two engines' embeddings of the probe waveforms."""
    with torch.inference_mode():
        return min(float(torch.nn.functional.cosine_similarity(a(x), b(x))[0])
                   for x in (torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))[None] for w in probes))


def int8_or_fp32(graph: Path, int8: Path, threads: int, probes: Sequence[np.ndarray]) -> Path:
    """`int8` (written here: `graph` quantised) when its embeddings of the probes match the fp32
    graph's (cosine >= INT8_COSINE), else `graph` with a warning: a trained model's outlier
    activations can make int8 lose accuracy that random weights do not show, so it is measured on
    the audio being embedded."""
    if not probes:
        log.warning("no utterance to check the int8 graph on: using the fp32 graph")
        return graph
    try:
        quantize_int8(graph, int8)
    except Exception as e:  # noqa: BLE001  # the quantiser's failures have no common type
        log.warning("the graph could not be quantised to int8 (%s): using the fp32 graph", _first_line(e))
        return graph
    cosine = probe_cosine(OnnxEmbedder(graph, threads), OnnxEmbedder(int8, threads), probes)
    if cosine < INT8_COSINE:
        log.warning("the int8 graph's embeddings differ from fp32's (cosine %.6f < %s on %d utterances of the set): "
                    "using the fp32 graph", cosine, INT8_COSINE, len(probes))
        int8.unlink()
        return graph
    log.info("int8 graph: cosine %.6f to fp32 on %d utterances of the set", cosine, len(probes))
    return int8


def export_int8(model: SpeakerModel, out: Path, sample_rate: int, level_dbfs: float | None) -> float:
    """Write `out`: the model's graph quantised by quantize_int8. Returns the cosine of its embedding
    to the fp32 graph's on a noise probe; the int8 engine checks the audio it embeds instead."""
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "embedder.onnx"  # a temporary graph, not a package's
        export_onnx(model, fp32, sample_rate, level_dbfs)
        quantize_int8(fp32, out)
        probe = np.random.default_rng(0).standard_normal(int(4.7 * sample_rate)).astype(np.float32) * 0.1
        return probe_cosine(OnnxEmbedder(fp32, 0), OnnxEmbedder(out, 0), [probe])


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[None]:
    """File descriptor 1 on /dev/null: on a failure the exporter prints its whole graph there, from
    C++ (the failure itself is logged in one line)."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        libc.fflush(None)  # what C and C++ buffered goes to /dev/null too, not to the restored stdout
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _first_line(e: Exception) -> str:
    """An exception as one short line (an exporter's message can hold a tensor dump)."""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def engine_graph(model: SpeakerModel, engine: str, sample_rate: int, threads: int, workdir: Path,
                 graph: Path | None = None, probes: Sequence[np.ndarray] = ()) -> Path | None:
    """The ONNX graph a CPU embeds with under `engine` ('auto', 'onnx', 'onnx-int8'), or None when
    PyTorch must: `graph` when given (a package's model.onnx, parity-checked when it was packaged;
    its level scaling of already conditioned audio is a no-op), else the model exported to
    workdir/embedder.onnx, used only if the export works and its embedding equals PyTorch's
    (cosine >= PARITY_COSINE on a probe); the graph is a speed-up, never a reason for extraction
    to fail. 'onnx-int8': that graph quantised to workdir/embedder.int8.onnx, used only if it
    passes `int8_or_fp32`'s check on `probes` (conditioned utterances of the set being embedded)."""
    if graph is None:
        graph = workdir / "embedder.onnx"
        try:  # without level scaling: the extraction path conditions audio first
            cosine = export_onnx(model, graph, sample_rate, None)
        except Exception as e:  # noqa: BLE001  # the exporter's failures have no common type
            log.warning("the model could not be exported to ONNX (%s): using PyTorch (extract.engine torch "
                        "skips the attempt)", _first_line(e))
            return None
        if cosine < PARITY_COSINE:
            log.warning("the ONNX graph's embedding differs from PyTorch's (cosine %.6f): using PyTorch", cosine)
            return None
    if engine == "onnx-int8":
        return int8_or_fp32(graph, workdir / "embedder.int8.onnx", threads, probes)
    return graph


def extraction_engine(model: SpeakerModel, device: str, engine: str, sample_rate: int, threads: int,
                      graph: Path | None = None, probes: Sequence[np.ndarray] = ()) -> Callable[..., torch.Tensor]:
    """What embeds on `device`: on a CPU, the graph `engine_graph` chooses through onnxruntime
    (1.2-1.4x faster than eager PyTorch, BENCHMARKS.md; int8 faster again); on a GPU, with engine
    'torch', or when no graph passes its checks, the PyTorch model."""
    if torch.device(device).type != "cpu":
        if engine not in ("auto", "torch"):  # onnx-int8 is stage 5's default: a GPU run must not fail on it
            log.info("the %s engine is a CPU speed-up: PyTorch embeds on %s", engine, device)
        return model
    if engine == "torch":
        return model
    with tempfile.TemporaryDirectory() as tmp:  # a session holds its graph: the files can go
        chosen = engine_graph(model, engine, sample_rate, threads, Path(tmp), graph, probes)
        return model if chosen is None else OnnxEmbedder(chosen, threads)
