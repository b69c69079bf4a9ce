"""A packaged model: everything needed to embed and verify outside the recipe, in one directory.

  voxadapt-model.json   manifest: format, name, sample rate, methods, default method, thresholds
  config.yaml           the experiment config          backbone.json   transformers config
  model.safetensors     speaker model weights (no classification head), or
  adapters.safetensors  adapters + LayerNorms + back-end only, with base_model in the manifest
  backend/              mean.vec, lda.mat, plda, cohort.ark (Kaldi formats; stage 6's files)
  calibration.json      score -> LLR per method, with Bayes thresholds
  model.onnx            waveform -> embedding (stage 8 writes it)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from voxadapt.config import load_config
from voxadapt.errors import VoxadaptError, located
from voxadapt.fileio import atomic_dir

FORMAT = "voxadapt-package-1"
MANIFEST = "voxadapt-model.json"


def _default_method(exp_dir: Path, methods: list[str]) -> str:
    """The method with the lowest EER on the first trial list of results.json (else the first)."""
    results = exp_dir / "results.json"
    if results.is_file():
        first = next(iter(json.loads(results.read_text()).values()), {})
        ranked = sorted((r["eer"], m) for m, r in first.items() if m in methods)
        if ranked:
            return ranked[0][1]
    return methods[0]


def make_package(exp_dir: Path, out: Path, adapters_only: bool = False) -> Path:
    from voxadapt.models.adapters import is_adapter_param

    model_dir, backend_dir = exp_dir / "model", exp_dir / "backend"
    for needed in (model_dir / "model.safetensors", backend_dir / "calibration.json", backend_dir / "mean.vec"):
        if not needed.is_file():
            raise VoxadaptError(located(needed, None, "missing", "run stages 3-6 first"))
    cfg = load_config(model_dir / "config.yaml")
    weights = {k: v for k, v in load_file(str(model_dir / "model.safetensors")).items() if not k.startswith("head.")}
    calibration = json.loads((backend_dir / "calibration.json").read_text())
    methods = list(calibration)
    manifest = {"format": FORMAT, "name": cfg.name, "sample_rate": cfg.data.sample_rate, "methods": methods,
                "default_method": _default_method(exp_dir, methods), "asnorm_top_n": cfg.scoring.asnorm_top_n,
                "thresholds": {m: calibration[m]["thresholds"] for m in methods}, "base_model": ""}
    with atomic_dir(out) as tmp:
        shutil.copy(model_dir / "config.yaml", tmp / "config.yaml")
        shutil.copy(model_dir / "backbone.json", tmp / "backbone.json")
        if adapters_only:
            if not (cfg.model.adapters.enabled and cfg.model.backbone.path):
                raise VoxadaptError("--adapters-only needs a model with adapters on a pre-trained backbone "
                                    "(model.adapters and model.backbone.path)")
            keep = {k: v for k, v in weights.items() if not k.startswith("backbone.") or is_adapter_param(k)
                    or "layer_norm" in k}
            save_file(keep, str(tmp / "adapters.safetensors"))
            manifest["base_model"] = str(Path(cfg.model.backbone.path).resolve())
        else:
            save_file(weights, str(tmp / "model.safetensors"))
        (tmp / "backend").mkdir()
        for name in ("mean.vec", "lda.mat", "plda", "cohort.ark"):
            if (backend_dir / name).is_file():
                shutil.copy(backend_dir / name, tmp / "backend" / name)
        shutil.copy(backend_dir / "calibration.json", tmp / "calibration.json")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def read_manifest(path: Path) -> dict:
    if not (path / MANIFEST).is_file():
        raise VoxadaptError(located(path / MANIFEST, None, "missing: not a packaged voxadapt model",
                                    "make one with ./run.sh --stage 8, or pyscripts/package_model.py"))
    manifest = json.loads((path / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise VoxadaptError(located(path / MANIFEST, None, f"unknown package format {manifest.get('format')!r}",
                                    "re-package the model with this version of voxadapt"))
    return manifest


def load_speaker_model(path: Path, manifest: dict, device: str):  # noqa: ANN201 - (SpeakerModel, Config)
    """The speaker model of a package (full weights, or base model + adapters)."""
    from voxadapt.models.backbone import SSLBackbone, _classes, build_hf_model
    from voxadapt.models.speaker import SpeakerModel, _normalize_flag, make_backend

    cfg = load_config(path / "config.yaml")
    if manifest["base_model"]:
        hf = build_hf_model(cfg.model.backbone.type, manifest["base_model"], {}, cfg.seed)
        weights_file = path / "adapters.safetensors"
    else:
        hf_json = json.loads((path / "backbone.json").read_text())
        config_cls, model_cls = _classes(hf_json.get("model_type", ""))
        hf = model_cls(config_cls.from_dict(hf_json))
        weights_file = path / "model.safetensors"
    backbone = SSLBackbone(hf, _normalize_flag(cfg.model), cfg.model.adapters)
    model = SpeakerModel(backbone, make_backend(cfg.model, backbone.num_layers + 1, backbone.hidden_size))
    if not weights_file.is_file():
        raise VoxadaptError(located(weights_file, None, "missing", "re-package the model"))
    state = load_file(str(weights_file))
    missing, unexpected = model.load_state_dict(state, strict=not manifest["base_model"])
    if unexpected or (manifest["base_model"] and any(k.startswith("backend.") for k in missing)):
        raise VoxadaptError(located(weights_file, None, "weights do not fit the packaged config", "re-package it"))
    return model.to(device).eval(), cfg


def package_stage(exp_dir: Path, out: Path, adapters_only: bool, onnx: bool) -> str:
    """Stage 8: the package (and model.onnx), skipped when its inputs have not changed."""
    import logging

    from voxadapt.fileio import StageMarker
    from voxadapt.train.trainer import file_digest

    log = logging.getLogger(__name__)
    inputs = {"model": file_digest(exp_dir / "model" / "model.safetensors") if (exp_dir / "model" / "model.safetensors").is_file() else "",
              "calibration": file_digest(exp_dir / "backend" / "calibration.json") if (exp_dir / "backend" / "calibration.json").is_file() else "",
              "adapters_only": adapters_only, "onnx": onnx}
    marker = StageMarker(exp_dir / ".done" / "stage8_package.json", inputs)
    if marker.is_done(outputs_hint=out) and (out / MANIFEST).is_file():
        log.info("stage 8: package already made (%s); nothing to do", out)
        return f"{out}: up to date"
    make_package(exp_dir, out, adapters_only)
    line = f"{out}: packaged"
    if onnx:
        from voxadapt.api import SpeakerVerifier
        from voxadapt.onnx_export import export_onnx

        v = SpeakerVerifier(out)
        cosine = export_onnx(v.model, out / "model.onnx", v.sample_rate)
        line += f", model.onnx (cosine to PyTorch {cosine:.6f})"
    marker.mark_done()
    return line
