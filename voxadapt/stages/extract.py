"""Stage 5: x-vectors of a data dir <data>/<set>/ into <exp>/embeddings/<set>/, as Kaldi float
vectors (kaldiio), in N jobs.

steps/extract_xvectors.sh drives the stage (split, `$extract_cmd JOB=1:N`, merge) because its jobs
may run on a cluster. Before the jobs, `prepare_engine` builds the CPU engine's ONNX graph once
(exported, quantised and checked on utterances of the set), so the jobs of a set embed with the
same graph and none spends its start-up exporting it (a job that finds no graph for its inputs
makes and checks its own, on its own part). Each job (`run_job`) embeds one part of the
split data dir into xvector.<n>.{ark,scp}; the .scp is renamed into place last, so a job whose .scp exists is
complete and a re-run skips it. `run_merge` joins the parts into one sorted xvector.scp, checks
it (every utterance once, finite values, one dimension), and writes speaker means
spk_xvector.{ark,scp} and num_utts.ark as Kaldi's ivector-mean does.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from pathlib import Path

import kaldiio
import numpy as np
import torch

from voxadapt.config import Config, ExtractConfig
from voxadapt.data.audio import read_utterance
from voxadapt.data.kaldi_dir import DataDir, tables_digest
from voxadapt.embed import embed_waveforms, probe_waveforms
from voxadapt.errors import VoxadaptError, located
from voxadapt.fileio import StageMarker, atomic_dir, atomic_path, file_digest, text_digest
from voxadapt.layout import EmbeddingsLayout, dir_marker
from voxadapt.models.loading import load_embedding_model, weights_file
from voxadapt.onnx_export import INT8_RECIPE, OnnxEmbedder, engine_graph, external_data, extraction_engine
from voxadapt.train.distributed import resolve_device

log = logging.getLogger(__name__)


def model_digest(model_dir: Path) -> str:
    """Identifies the model an output was made with, by content: a copied experiment still matches."""
    weights = weights_file(model_dir)
    if not weights.is_file():
        raise VoxadaptError(located(weights, None, "missing: not a trained voxadapt model directory or package",
                                    "run stages 3-4 first (they write exp/<name>/model), or give a package"))
    stat = weights.stat()
    return _weights_digest(weights.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _weights_digest(path: Path, size: int, mtime_ns: int) -> str:
    """file_digest, read once per process for a file unchanged since (a step checks the set's,
    the engine's and a job's markers; WavLM Large's weights are 1.2 GB)."""
    return file_digest(path)


def job_device(name: str, job: int) -> torch.device:
    """Job `job`'s device: 'cuda' and 'auto' spread the jobs over the GPUs this process sees (job
    1 on cuda:0, job 2 on cuda:1, ...; under CUDA_VISIBLE_DEVICES or a scheduler that gives each
    job one GPU, that GPU); 'cuda:N' and 'cpu' as given."""
    return resolve_device(name, local_rank=(job - 1) % max(1, torch.cuda.device_count()))


def set_probes(d: DataDir, cfg: Config) -> list[np.ndarray]:
    """The utterances an int8 graph is checked on: the shortest, median and longest of the set."""
    durations = d.utt2dur()
    utts = sorted(d.utterance_ids, key=lambda u: (durations[u], u))
    chosen = dict.fromkeys((utts[0], utts[len(utts) // 2], utts[-1])) if utts else {}
    return probe_waveforms([read_utterance(d, u) for u in chosen], cfg.data.sample_rate, cfg.extract)


def engine_marker(cfg: Config, model_dir: Path, data_dir: Path, out_dir: Path) -> StageMarker:
    return StageMarker(dir_marker(EmbeddingsLayout(out_dir).engine),
                       {"model": model_digest(model_dir), "tables": tables_digest(data_dir),
                        "conditioning": conditioning_settings(cfg.extract)})


def engine_ready(marker: StageMarker) -> bool:
    try:
        return marker.is_done()
    except VoxadaptError:  # built for another model or other settings: not this call's graph
        return False


def prepare_engine(cfg: Config, model_dir: Path, data_dir: Path, out_dir: Path) -> None:
    """Choose what the jobs of a CPU extraction embed with: a graph in <out>/engine/ (engine_graph:
    fp32 or int8), or none when no graph passed its checks (PyTorch embeds). Nothing with engine
    'torch', or when the jobs will embed on GPUs (extract.device cuda, or auto where this step
    sees one; this step may run on a node without the jobs' GPUs, so it does not check them)."""
    on_gpu = cfg.extract.device.startswith("cuda") or (cfg.extract.device == "auto" and torch.cuda.is_available())
    engine_dir = EmbeddingsLayout(out_dir).engine
    marker = engine_marker(cfg, model_dir, data_dir, out_dir)
    if on_gpu or cfg.extract.engine == "torch" or engine_ready(marker):
        return
    probes = set_probes(DataDir.load(data_dir), cfg) if cfg.extract.engine == "onnx-int8" else []
    threads = cfg.extract.num_threads or torch.get_num_threads()
    with atomic_dir(engine_dir) as tmp:  # a killed or failed build leaves nothing for the jobs to take
        chosen = engine_graph(load_embedding_model(model_dir, "cpu"), cfg.extract.engine, cfg.data.sample_rate,
                              threads, tmp, probes=probes)
        for graph in tmp.glob("*.onnx"):
            if graph != chosen:  # an int8 graph makes the fp32 one it came from unneeded
                graph.unlink()
                external_data(graph).unlink(missing_ok=True)
        StageMarker(dir_marker(tmp), marker.fingerprint).mark_done()
    log.info("stage 5: the jobs embed with %s", engine_dir / chosen.name if chosen else
             "PyTorch (no ONNX graph passed its checks)")


def remove_engine(out_dir: Path) -> None:
    """The jobs' graph, once the set is merged: its marker first, so that a removal cut short
    leaves a directory no job takes (prepare_engine builds it again if the set is redone)."""
    engine_dir = EmbeddingsLayout(out_dir).engine
    dir_marker(engine_dir).unlink(missing_ok=True)
    shutil.rmtree(engine_dir, ignore_errors=True)


def prepared_engine(cfg: Config, model_dir: Path, data_dir: Path, out_dir: Path) -> Path | None | bool:
    """The graph prepare_engine chose (None: PyTorch), or False when it has not run for these inputs."""
    if not engine_ready(engine_marker(cfg, model_dir, data_dir, out_dir)):
        return False
    return next(iter(sorted(EmbeddingsLayout(out_dir).engine.glob("*.onnx"))), None)


def job_marker(cfg: Config, model_dir: Path, part: DataDir, out_dir: Path, job: int) -> StageMarker:
    return StageMarker(EmbeddingsLayout(out_dir).job_marker(job), {"model": model_digest(model_dir),
                                                                   "conditioning": conditioning_settings(cfg.extract),
                                                                   "utts": text_digest(" ".join(part.utterance_ids))})


def jobs_done(cfg: Config, model_dir: Path, split_dir: Path, out_dir: Path, nj: int) -> bool:
    """Whether every job's x-vectors are written for these inputs (a merge was lost): the split
    step then builds no graph that no job would use."""
    for job in range(1, nj + 1):  # (a job made with other settings: its marker's error, before any graph is built)
        scp = EmbeddingsLayout(out_dir).job_scp(job)
        if not job_marker(cfg, model_dir, DataDir.load(split_dir / str(job)), out_dir, job).is_done(outputs_hint=scp):
            return False
    return True


def run_job(cfg: Config, model_dir: Path, split_dir: Path, out_dir: Path, job: int) -> None:
    """Embed part `job` of a split data dir into out_dir/xvector.<job>.{ark,scp} (skip if done)."""
    part = DataDir.load(split_dir / str(job))
    scp = EmbeddingsLayout(out_dir).job_scp(job)
    marker = job_marker(cfg, model_dir, part, out_dir, job)
    if scp.is_file() and marker.is_done(outputs_hint=scp):
        log.info("job %d: %s already complete; nothing to do", job, scp)
        return
    if cfg.extract.num_threads:
        torch.set_num_threads(cfg.extract.num_threads)
    device = str(job_device(cfg.extract.device, job))
    log.info("job %d: on %s", job, device)
    durations = part.utt2dur()
    utts = sorted(part.utterance_ids, key=lambda u: (durations[u], u))  # similar lengths batch together
    threads = torch.get_num_threads()
    prepared = prepared_engine(cfg, model_dir, split_dir.parent, out_dir) if device == "cpu" else False
    if prepared:
        log.info("job %d: embedding with %s", job, prepared)
        model = OnnxEmbedder(prepared, threads)
    else:
        model = load_embedding_model(model_dir, device)  # PyTorch, when prepare_engine chose it (None)
        if prepared is False:  # a GPU, engine torch, or no graph from the split step: the job's own choice
            probes = set_probes(part, cfg) if cfg.extract.engine == "onnx-int8" and device == "cpu" else []
            model = extraction_engine(model, device, cfg.extract.engine, cfg.data.sample_rate, threads, probes=probes)
    ark = EmbeddingsLayout(out_dir).job_ark(job)
    out_dir.mkdir(parents=True, exist_ok=True)
    sr = cfg.data.sample_rate
    group, budget = [], 20 * cfg.extract.batch_seconds  # audio held in memory at once
    with atomic_path(scp) as tmp_scp, kaldiio.WriteHelper(f"ark,scp:{ark},{tmp_scp}") as writer:
        def flush() -> None:
            vectors = embed_waveforms(model, [w for _, w in group], sr, cfg.extract, device)
            for (utt, _), vec in zip(group, vectors):
                writer(utt, vec.astype(np.float32))
            group.clear()

        held = 0.0
        for i, utt in enumerate(utts):
            group.append((utt, read_utterance(part, utt)))
            held += durations[utt]
            if held >= budget or i == len(utts) - 1:
                flush()
                held = 0.0
    marker.mark_done()
    log.info("job %d: %d x-vectors -> %s", job, len(utts), scp)


def merge_jobs(data_dir: Path, out_dir: Path, nj: int) -> int:
    """Join job outputs into xvector.scp, check them, write speaker means. Returns the dimension."""
    d = DataDir.load(data_dir)
    lines: dict[str, str] = {}
    for job in range(1, nj + 1):
        part = EmbeddingsLayout(out_dir).job_scp(job)
        if not part.is_file():
            raise VoxadaptError(located(part, None, "missing: extraction job did not finish",
                                        f"see {EmbeddingsLayout(out_dir).job_log(job)} and re-run stage 5"))
        for line in part.read_text().splitlines():
            utt, loc = line.split(maxsplit=1)
            if utt in lines:
                raise VoxadaptError(located(part, None, f"utterance '{utt}' extracted twice", "re-run stage 5"))
            lines[utt] = loc
    missing = sorted(set(d.utt2spk) - set(lines))
    extra = sorted(set(lines) - set(d.utt2spk))
    if missing or extra:
        raise VoxadaptError(located(out_dir, None, f"x-vectors missing for {missing[:3]} / unexpected {extra[:3]}",
                                    "delete the job outputs and re-run stage 5"))
    dims = set()
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for utt in sorted(lines):
        vec = kaldiio.load_mat(lines[utt])
        if vec.ndim != 1 or not np.isfinite(vec).all():
            raise VoxadaptError(located(out_dir, None, f"x-vector of '{utt}' is not a finite vector",
                                        "delete the job outputs and re-run stage 5"))
        dims.add(len(vec))
        spk = d.utt2spk[utt]
        sums[spk] = sums.get(spk, 0) + vec.astype(np.float64)
        counts[spk] = counts.get(spk, 0) + 1
    if len(dims) != 1:
        raise VoxadaptError(located(out_dir, None, f"x-vectors of different dimensions {sorted(dims)}",
                                    "delete the job outputs and re-run stage 5"))
    out = EmbeddingsLayout(out_dir)
    with atomic_path(out.spk_xvector_scp) as tmp_scp:
        with kaldiio.WriteHelper(f"ark,scp:{out.spk_xvector_ark},{tmp_scp}") as writer:
            for spk in sorted(sums):
                writer(spk, (sums[spk] / counts[spk]).astype(np.float32))
    with atomic_path(out.num_utts) as tmp:
        tmp.write_text("".join(f"{spk} {counts[spk]}\n" for spk in sorted(counts)))
    with atomic_path(out.xvector_scp) as tmp:  # last: its presence means the set is complete
        tmp.write_text("".join(f"{utt} {lines[utt]}\n" for utt in sorted(lines)))
    return dims.pop()


def write_summary(out_dir: Path, model_dir: Path, dim: int, count: int) -> None:
    with atomic_path(EmbeddingsLayout(out_dir).info) as tmp:
        tmp.write_text(json.dumps({"model": os.path.realpath(model_dir), "dim": dim, "utterances": count}, indent=1) + "\n")


def conditioning_settings(opts: ExtractConfig) -> dict:
    """The extraction settings x-vectors depend on (besides the model and the audio); the engine and
    precision too (int8 or bf16 embeddings differ slightly), and the int8 graph's recipe, so
    switching any of them re-extracts."""
    settings = {"level_dbfs": opts.level_dbfs, "vad": opts.vad, "engine": opts.engine, "precision": opts.precision}
    if opts.engine == "onnx-int8":
        settings["int8"] = INT8_RECIPE
    return settings


def run_merge(cfg: Config, data_dir: Path, model_dir: Path, out_dir: Path, nj: int, check_only: bool) -> int:
    d = DataDir.load(data_dir)
    marker = StageMarker(dir_marker(out_dir), {"model": model_digest(model_dir), "tables": tables_digest(d.path),
                                                  "conditioning": conditioning_settings(cfg.extract)})
    done = EmbeddingsLayout(out_dir).xvector_scp.is_file() and marker.is_done(outputs_hint=out_dir)
    if check_only:
        if done:
            remove_engine(out_dir)  # left by a merge killed after it finished the set
            log.info("stage 5: %s already complete; nothing to do", out_dir)
        return 0 if done else 1
    dim = merge_jobs(data_dir, out_dir, nj)
    write_summary(out_dir, model_dir, dim, len(d.utt2spk))
    marker.mark_done()
    remove_engine(out_dir)
    log.info("stage 5: %d x-vectors of dimension %d in %s", len(d.utt2spk), dim, EmbeddingsLayout(out_dir).xvector_scp)
    return 0
