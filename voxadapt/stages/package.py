"""Stage 8: <exp>/package/ from <exp>/model and <exp>/backend/ (see voxadapt.package for its
contents), with model.onnx; skipped when its inputs have not changed."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from voxadapt.api import SpeakerVerifier
from voxadapt.config import Config
from voxadapt.errors import VoxadaptError, located
from voxadapt.fileio import StageMarker, file_digest
from voxadapt.layout import ExpLayout, PackageLayout
from voxadapt.onnx_export import export_onnx
from voxadapt.package import make_package

log = logging.getLogger(__name__)


def run(cfg: Config, exp: ExpLayout, out: Path | None = None,
        adapters_only: bool = False, onnx: bool = True) -> None:
    out = out or exp.package
    model_link = exp.model
    if model_link.is_symlink() and not model_link.exists():
        raise VoxadaptError(located(model_link, None, f"points to {os.readlink(model_link)}, which does not exist",
                                    "re-run stage 4 (it publishes the final model), or delete the link"))
    weights, calibration = model_link / "model.safetensors", exp.calibration
    for needed, stages in ((weights, "3-4"), (calibration, "6")):
        if not needed.is_file():
            raise VoxadaptError(located(needed, None, "missing", f"run stage {stages} first"))
    inputs = {"model": file_digest(weights), "calibration": file_digest(calibration),
              "adapters_only": adapters_only, "onnx": onnx}
    marker = StageMarker(exp.marker(8, "package"), inputs)
    if marker.is_done(outputs_hint=out) and PackageLayout(out).manifest.is_file():
        log.info("stage 8: package already made (%s); nothing to do", out)
        return
    make_package(exp.model, exp.backend, exp.results_json, out, adapters_only)
    line = f"{out}: packaged"
    if onnx:
        v = SpeakerVerifier(out)
        cosine = export_onnx(v.model, PackageLayout(out).onnx, v.sample_rate, v.cfg.extract.level_dbfs)
        line += f", model.onnx (cosine to PyTorch {cosine:.6f})"
    marker.mark_done()
    print(line)
