"""The one way to load a speaker model from disk, used by extraction, packaging, the API and the
distillation teacher: from a trained-model directory (exp/<name>/model, a phase's final/) or from
a package (full weights, or adapters on a base model). Nothing is unpickled."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from voxadapt.compat import upgrade_state_dict
from voxadapt.config import Config, load_config
from voxadapt.errors import VoxadaptError, located
from voxadapt.fileio import read_safetensors
from voxadapt.layout import ModelDirLayout, PackageLayout, is_package
from voxadapt.models.aam import AAMSoftmax
from voxadapt.models.backbone import build_hf_model
from voxadapt.models.speaker import SpeakerModel, hf_model_from_json, load_weights, speaker_model_around
from voxadapt.package import read_manifest


@dataclass
class LoadedModel:
    model: SpeakerModel  # in eval mode, on the requested device
    cfg: Config
    head: AAMSoftmax | None = None  # trained-model directories only
    classes: list[str] | None = None


def load_speaker_model(path: str | Path, device: str = "cpu") -> LoadedModel:
    path = Path(path)
    loaded = _load_package(path) if is_package(path) else _load_model_dir(path)
    loaded.model.to(device).eval()
    if loaded.head is not None:
        loaded.head.to(device).eval()
    return loaded


def load_embedding_model(path: Path, device: str) -> SpeakerModel:
    """The speaker model (no head) of a trained-model dir or a package: what extraction embeds with."""
    return load_speaker_model(path, device).model


def weights_file(path: Path) -> Path:
    """The weights that identify a model dir or package (adapters only for an adapters package)."""
    if is_package(path) and read_manifest(path)["base_model"]:
        return PackageLayout(path).adapter_weights
    return ModelDirLayout(path).weights


def _load_model_dir(path: Path) -> LoadedModel:
    if path.is_file():
        raise VoxadaptError(located(path, None, "is a file, not a trained model directory or package",
                                    "give exp/<name>/model or a package directory"))
    files = ModelDirLayout(path)
    for file in files.files:
        if not file.is_file():
            raise VoxadaptError(located(file, None, "missing: not a trained voxadapt model directory",
                                        "run stages 3-4 first, or give exp/<name>/model"))
    cfg = load_config(files.config)
    classes = files.classes.read_text().split()
    model = speaker_model_around(hf_model_from_json(files.backbone, "re-run the stage that wrote the model"), cfg)
    head = AAMSoftmax(model.pooling.embed_dim, len(classes), subcenters=cfg.model.subcenters)
    load_weights(files.weights, model, head)
    head.scale = saved_head_scale(path, cfg)
    return LoadedModel(model, cfg, head, classes)


def saved_head_scale(path: Path, cfg: Config) -> float:
    """The scale the model dir's head was trained with: saved with its weights; for a dir written
    before it was, the scale of the phase whose final model the dir is (exp/<name>/<phase>/final,
    which exp/<name>/model links to), else of the config's last phase (the one stage 4 publishes)."""
    from safetensors import safe_open

    with safe_open(str(ModelDirLayout(path).weights), "pt") as f:
        saved = (f.metadata() or {}).get("head_scale")
    if saved is not None:
        return float(saved)
    phases = {p.name: p for p in cfg.train.phases + cfg.adapt.phases}
    return phases.get(path.resolve().parent.name, (cfg.adapt.phases or cfg.train.phases)[-1]).scale


def _load_package(path: Path) -> LoadedModel:
    """Full weights, or base model + adapters (the package's backbone LayerNorms and pooling)."""
    manifest, pkg = read_manifest(path), PackageLayout(path)
    fix = "re-package the model (./run.sh --stage 8)"
    cfg = load_config(pkg.config)
    base = manifest["base_model"]
    if base:
        hf = build_hf_model(cfg.model.backbone.type, base, {}, cfg.seed)
        file = pkg.adapter_weights
    else:
        hf = hf_model_from_json(pkg.backbone, fix)
        file = pkg.weights
    model = speaker_model_around(hf, cfg)
    state = upgrade_state_dict(read_safetensors(file, fix))
    own = model.state_dict()
    shapes_differ = [k for k in state if k in own and own[k].shape != state[k].shape]
    missing = set(own) - set(state)
    if set(state) - set(own) or shapes_differ or (missing and not base) or (
            base and any(k.startswith("pooling.") for k in missing)):
        raise VoxadaptError(located(file, None, "weights do not fit the packaged config", fix))
    model.load_state_dict(state, strict=not base)
    return LoadedModel(model, cfg)
