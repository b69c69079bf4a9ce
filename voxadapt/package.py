"""A packaged model: everything needed to embed and verify outside the recipe, in one directory.

  voxadapt-model.json   manifest: format, name, sample rate, methods, default method, thresholds
  config.yaml           the experiment config          backbone.json   transformers config
  model.safetensors     speaker model weights (no classification head), or
  adapters.safetensors  adapters + LayerNorms + pooling only, with base_model in the manifest
  backend/              mean.vec, lda.mat, plda, cohort.ark (Kaldi formats; stage 6's files)
  calibration.json      score -> LLR per method, with Bayes thresholds
  model.onnx            waveform -> embedding (stage 8 writes it)
  model.onnx.data       model.onnx's weights, for a model over 2 GB (w2v-BERT 2.0)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import save_file

from voxadapt.config import load_config
from voxadapt.errors import VoxadaptError, located
from voxadapt.fileio import atomic_dir, read_json, read_safetensors
from voxadapt.layout import BackendLayout, ModelDirLayout, PackageLayout

FORMAT = "voxadapt-package-1"


def _default_method(results: Path, methods: list[str]) -> str:
    """The method with the lowest EER on the first trial list of results.json (else the first)."""
    if results.is_file():
        first = next(iter(json.loads(results.read_text()).values()), {})
        ranked = sorted((r["eer"], m) for m, r in first.items() if m in methods)
        if ranked:
            return ranked[0][1]
    return methods[0]


def make_package(model_dir: Path, backend_dir: Path, results: Path, out: Path, adapters_only: bool = False) -> Path:
    """A package from a trained-model dir and its back-end; `results` (results.json) picks the
    default scoring method."""
    from voxadapt.models.adapters import is_adapter_param

    model, backend = ModelDirLayout(model_dir), BackendLayout(backend_dir)
    for needed in (model.weights, backend.calibration, backend.mean):
        if not needed.is_file():
            raise VoxadaptError(located(needed, None, "missing", "run stages 3-6 first"))
    cfg = load_config(model.config)
    weights = {k: v for k, v in read_safetensors(model.weights, "re-run stages 3-4").items()
               if not k.startswith("head.")}
    calibration = read_json(backend.calibration, "re-run stage 6")
    methods = list(calibration)
    manifest = {"format": FORMAT, "name": cfg.name, "sample_rate": cfg.data.sample_rate, "methods": methods,
                "default_method": _default_method(results, methods), "asnorm_top_n": cfg.scoring.asnorm_top_n,
                "thresholds": {m: calibration[m]["thresholds"] for m in methods}, "base_model": ""}
    with atomic_dir(out) as tmp_dir:
        tmp = PackageLayout(tmp_dir)
        shutil.copy(model.config, tmp.config)
        shutil.copy(model.backbone, tmp.backbone)
        if adapters_only:
            if not (cfg.model.adapters.enabled and cfg.model.backbone.path):
                raise VoxadaptError("--adapters-only needs a model with adapters on a pre-trained backbone "
                                    "(model.adapters and model.backbone.path)")
            keep = {k: v for k, v in weights.items() if not k.startswith("backbone.") or is_adapter_param(k)
                    or "layer_norm" in k}
            save_file(keep, str(tmp.adapter_weights))
            manifest["base_model"] = str(Path(cfg.model.backbone.path).resolve())
        else:
            save_file(weights, str(tmp.weights))
        tmp.backend.mkdir()
        for file in backend.parameters:
            if file.is_file():
                shutil.copy(file, tmp.backend / file.name)
        shutil.copy(backend.calibration, tmp.calibration)
        tmp.manifest.write_text(json.dumps(manifest, indent=1) + "\n")
    return out


REQUIRED = {"format": str, "name": str, "sample_rate": int, "methods": list, "default_method": str,
            "asnorm_top_n": int, "thresholds": dict, "base_model": str}


def read_manifest(path: Path) -> dict:
    file = PackageLayout(path).manifest
    if path.is_file():
        raise VoxadaptError(located(path, None, "is a file, not a packaged model directory",
                                    "give the package directory (exp/<name>/package)"))
    if not file.is_file():
        raise VoxadaptError(located(file, None, "missing: not a packaged voxadapt model",
                                    "make one with ./run.sh --stage 8, or python -m voxadapt.stages package"))
    manifest = read_json(file, "re-package the model (./run.sh --stage 8)")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise VoxadaptError(located(file, None, f"unknown package format {found!r}",
                                    "re-package the model with this version of voxadapt"))
    for key, kind in REQUIRED.items():
        if not isinstance(manifest.get(key), kind):
            raise VoxadaptError(located(file, None, f"'{key}' is missing or not a {kind.__name__}",
                                        "re-package the model (./run.sh --stage 8)"))
    return manifest
