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
import os
import shutil
from pathlib import Path

from safetensors.torch import save_file

from voxadapt.config import load_config
from voxadapt.errors import VoxadaptError, located
from voxadapt.fileio import atomic_dir, read_json, read_safetensors

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
    weights = {k: v for k, v in read_safetensors(model_dir / "model.safetensors", "re-run stages 3-4").items()
               if not k.startswith("head.")}
    calibration = read_json(backend_dir / "calibration.json", "re-run stage 6")
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


REQUIRED = {"format": str, "name": str, "sample_rate": int, "methods": list, "default_method": str,
            "asnorm_top_n": int, "thresholds": dict, "base_model": str}


def read_manifest(path: Path) -> dict:
    file = path / MANIFEST
    if path.is_file():
        raise VoxadaptError(located(path, None, "is a file, not a packaged model directory",
                                    "give the package directory (exp/<name>/package)"))
    if not file.is_file():
        raise VoxadaptError(located(file, None, "missing: not a packaged voxadapt model",
                                    "make one with ./run.sh --stage 8, or pyscripts/package_model.py"))
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


def load_speaker_model(path: Path, manifest: dict, device: str):  # noqa: ANN201 - (SpeakerModel, Config)
    """The speaker model of a package (full weights, or base model + adapters)."""
    from voxadapt.models.backbone import build_hf_model
    from voxadapt.models.speaker import hf_model_from_json, speaker_model_around

    fix = "re-package the model (./run.sh --stage 8)"
    cfg = load_config(path / "config.yaml")
    if manifest["base_model"]:
        hf = build_hf_model(cfg.model.backbone.type, manifest["base_model"], {}, cfg.seed)
        weights_file = path / "adapters.safetensors"
    else:
        hf = hf_model_from_json(path / "backbone.json", fix)
        weights_file = path / "model.safetensors"
    model = speaker_model_around(hf, cfg)
    state = read_safetensors(weights_file, fix)
    own = model.state_dict()
    shapes_differ = [k for k in state if k in own and own[k].shape != state[k].shape]
    missing = set(own) - set(state)
    if set(state) - set(own) or shapes_differ or (missing and not manifest["base_model"]) or (
            manifest["base_model"] and any(k.startswith("backend.") for k in missing)):
        raise VoxadaptError(located(weights_file, None, "weights do not fit the packaged config", fix))
    model.load_state_dict(state, strict=not manifest["base_model"])
    return model.to(device).eval(), cfg


def is_package(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def load_embedding_model(path: Path, device: str):  # noqa: ANN201 - SpeakerModel
    """The speaker model (no head) of a trained-model dir (exp/<name>/model) or of a package: what
    extraction and evaluation embed with."""
    if is_package(path):
        return load_speaker_model(path, read_manifest(path), device)[0]
    from voxadapt.models.speaker import load_model_dir

    return load_model_dir(path, device)[0]


def weights_file(path: Path) -> Path:
    """The weights that identify a model dir or package (adapters only for an adapters package)."""
    if is_package(path) and read_manifest(path)["base_model"]:
        return path / "adapters.safetensors"
    return path / "model.safetensors"


def package_stage(exp_dir: Path, out: Path, adapters_only: bool, onnx: bool) -> str:
    """Stage 8: the package (and model.onnx), skipped when its inputs have not changed."""
    import logging

    from voxadapt.fileio import StageMarker, file_digest

    log = logging.getLogger(__name__)
    model_link = exp_dir / "model"
    if model_link.is_symlink() and not model_link.exists():
        raise VoxadaptError(located(model_link, None, f"points to {os.readlink(model_link)}, which does not exist",
                                    "re-run stage 4 (it publishes the final model), or delete the link"))
    weights, calibration = model_link / "model.safetensors", exp_dir / "backend" / "calibration.json"
    for needed, stages in ((weights, "3-4"), (calibration, "6")):
        if not needed.is_file():
            raise VoxadaptError(located(needed, None, "missing", f"run stage {stages} first"))
    inputs = {"model": file_digest(weights), "calibration": file_digest(calibration),
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
        cosine = export_onnx(v.model, out / "model.onnx", v.sample_rate, v.cfg.extract.level_dbfs)
        line += f", model.onnx (cosine to PyTorch {cosine:.6f})"
    marker.mark_done()
    return line
