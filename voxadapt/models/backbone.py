"""Self-supervised speech backbones from `transformers`, exposing all L+1 hidden states.

The backbone runs the model's own modules (CNN feature encoder, feature projection, transformer
encoder) and records the transformer input and every layer's output with forward hooks, so no
model code is copied. The CNN encoder is frozen unless a phase trains it with a scaled-down gradient
(cnn_grad_scale); utterances of unequal lengths go through it one at a time (GroupNorm over time
would otherwise see padding); the transformer runs batched with a padding mask, so a batched
embedding equals the unbatched one. w2v-BERT 2.0 has no CNN: its filterbanks are computed in the
model instead (models/w2vbert.py), batched, and its feature projection is the input embedding.
"""

from __future__ import annotations

import contextlib
import json
import logging
import types
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from voxadapt.config import AdapterConfig, BackboneConfig
from voxadapt.errors import VoxadaptError, first_line, located
from voxadapt.fileio import content_digest, file_digest, read_json
from voxadapt.models.adapters import Bottleneck, add_inner_adapters, add_lora, chosen_layers
from voxadapt.models.w2vbert import W2vBertFbank, check_architecture, check_preprocessor

log = logging.getLogger(__name__)

# WavLM's attention passes a boolean padding mask with a float position bias; torch warns on every call.
warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask and attn_mask")

MODEL_TYPES = {
    "wavlm": ("WavLMConfig", "WavLMModel"),
    "hubert": ("HubertConfig", "HubertModel"),
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel"),
    "w2v-bert": ("Wav2Vec2BertConfig", "Wav2Vec2BertModel"),
}
HF_MODEL_TYPES = {"wav2vec2-bert": "w2v-bert"}  # transformers' model_type where it differs from the backbone type
PT_CHECKPOINT_FIX = ("a fairseq/UniSpeech .pt checkpoint is not read: give the transformers directory of the same model "
                     "(microsoft/wavlm-base-plus, microsoft/wavlm-large, facebook/w2v-bert-2.0, ...: "
                     "huggingface-cli download <name> --local-dir models/<name>)")


def reject_checkpoint_file(path: Path) -> None:
    """The MHFA authors' recipes load Microsoft's WavLM-Base+.pt / WavLM-Large.pt; this one reads
    transformers directories only, and says so."""
    if path.is_file() and path.suffix in (".pt", ".pth", ".ckpt"):
        raise VoxadaptError(located(path, None, "is a PyTorch checkpoint file, not a model directory", PT_CHECKPOINT_FIX))


def backbone_type(hf_model_type: str) -> str:
    """The backbone type (model.backbone.type) of a transformers config's model_type."""
    return HF_MODEL_TYPES.get(hf_model_type, hf_model_type)


def model_classes(model_type: str):  # noqa: ANN202
    import transformers

    if model_type not in MODEL_TYPES:
        raise VoxadaptError(f"backbone type '{model_type}' is not supported; use one of {', '.join(MODEL_TYPES)}")
    cfg_name, model_name = MODEL_TYPES[model_type]
    return getattr(transformers, cfg_name), getattr(transformers, model_name)


def random_hf_model(model_type: str, arch: dict, seed: int, source: str = "model.backbone.arch"):  # noqa: ANN201
    """A seeded, randomly initialised transformers model of architecture `arch` (the tiny default,
    WavLM Base+'s shape, a saved backbone.json); errors name `source`."""
    config_cls, model_cls = model_classes(model_type)
    # Masking (SpecAugment) happens only in the model's own forward, which the backbone never calls,
    # so only layerdrop needs switching off.
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # the same random backbone every time (also the L2-SP reference)
        try:
            return model_cls(config_cls(**{**arch, "layerdrop": 0.0}))
        except (TypeError, ValueError, RuntimeError) as err:
            raise VoxadaptError(f"transformers cannot build a {model_type} model from {source}: "
                                f"{first_line(err)}") from None


def read_local_config(path: Path) -> tuple[str, dict]:
    """(backbone type, config dict) of a local `save_pretrained` directory, with clear errors."""
    reject_checkpoint_file(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise VoxadaptError(located(path, None, "not a transformers model directory (no config.json)",
                                    "give the directory written by save_pretrained (config.json + weights)"))
    try:
        data = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as err:
        raise VoxadaptError(located(cfg_file, err.lineno, "not valid JSON", "re-download the model")) from None
    model_type = backbone_type(data.get("model_type", ""))
    if model_type not in MODEL_TYPES:
        raise VoxadaptError(located(cfg_file, None, f"model_type '{model_type}' is not an SSL speech model",
                                    f"use a {', '.join(MODEL_TYPES)} checkpoint"))
    return model_type, data


class SSLBackbone(nn.Module):
    def __init__(self, model: nn.Module, normalize_waveform: bool, adapters: AdapterConfig | None = None):
        super().__init__()
        cfg = model.config
        if getattr(cfg, "layerdrop", 0.0):
            raise VoxadaptError("the transformers model's own layerdrop must be 0 (its skipped layers leave no hidden "
                                "state); set a training phase's layerdrop instead")
        self.model = model
        self.normalize_waveform = normalize_waveform
        self.num_layers = cfg.num_hidden_layers
        self.hidden_size = cfg.hidden_size
        self.stable_layer_norm = bool(getattr(cfg, "do_stable_layer_norm", False))
        # w2v-BERT: filterbanks instead of a CNN. Its own adapter and intermediate FFN (CTC models)
        # run on the last layer only, after the states the back-end reads: they would never train.
        self.fbank = W2vBertFbank() if not hasattr(model, "feature_extractor") else None
        if self.fbank is not None:
            check_architecture(cfg)
            model.adapter = model.intermediate_ffn = None
        else:  # Frozen unless set_trainable says otherwise (then with its gradient scaled by cnn_grad_scale).
            # _freeze_parameters also stops transformers from making the waveform require a gradient.
            model.feature_extractor._freeze_parameters()
        self.cnn_grad_scale = 0.0
        if hasattr(model, "masked_spec_embed") and model.masked_spec_embed is not None:
            model.masked_spec_embed.requires_grad_(False)  # only used for SpecAugment masking
        self._states: list[torch.Tensor] = []
        self._mask: torch.Tensor | None = None
        self.layerdrop = 0.0  # set by enable_layerdrop for a phase that trains with it
        self.layer_drops: frozenset[int] = frozenset()  # the layers the current training step skips
        layers = model.encoder.layers
        layers[0].register_forward_pre_hook(self._record_input, with_kwargs=True)
        for layer in layers:
            layer.register_forward_hook(self._record_output)
        # data2vec-audio stacks several positional convolutions: padding must stay zero between them.
        for layer in getattr(getattr(model.encoder, "pos_conv_embed", None), "layers", []):
            layer.register_forward_hook(self._zero_padding)
        self.adapter_config = adapters or AdapterConfig()
        a = self.adapter_config
        if a.inner:
            add_inner_adapters(layers, self.hidden_size, a)
        if a.lora:
            add_lora(layers, a)
        self.inter_layers = chosen_layers(a, self.num_layers) if a.inter else []
        self.inter_adapters = nn.ModuleList(Bottleneck(self.hidden_size, a.bottleneck, a.activation)
                                            for _ in self.inter_layers)

    def enable_activation_checkpointing(self) -> None:
        """transformers then recomputes each layer in the backward pass instead of keeping its
        activations. The recomputation must run under the same input mode as the forward pass
        (ContiguousLinearInputs around the encoder on a CPU), or it runs other operations."""
        self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={
            "use_reentrant": False, "context_fn": lambda: (contextlib.nullcontext(), self._linear_input_mode())})

    def enable_layerdrop(self, p: float) -> None:
        """LayerDrop for a training phase: each step (draw_layer_drops) skips each droppable layer with
        probability p. A skipped layer passes its input through, so its hidden state equals the one
        below and the pooling still gets L + 1 states; in eval mode every layer runs. transformers'
        own layerdrop is not used: its skipped layers would leave no hidden state, and its draws come
        from each process's RNG, not shared across processes."""
        self.layerdrop = p
        for layer in self.layers:
            layer.dropped = False
            layer.forward = types.MethodType(_skip_or_forward, layer)  # a bound method: deepcopy rebinds it

    def droppable_layers(self) -> list[int]:
        """WavLM's layer 0 computes the relative position bias every layer above reads, so it always
        runs (transformers never drops it either); any layer of the other backbones may be dropped."""
        first = 1 if hasattr(getattr(self.layers[0], "attention", None), "rel_attn_embed") else 0
        return list(range(first, self.num_layers))

    def draw_layer_drops(self, seed: int, step: int) -> frozenset[int]:
        """The layers training step `step` skips: a function of seed and step only, so every process,
        micro-batch and resume draws the same ones (and DDP sees the same unused parameters on all ranks)."""
        draws = np.random.default_rng(np.random.SeedSequence([seed, 9_000_011, step])).random(self.num_layers)
        self.layer_drops = frozenset(i for i in self.droppable_layers() if draws[i] < self.layerdrop)
        for i, layer in enumerate(self.layers):
            layer.dropped = i in self.layer_drops
        return self.layer_drops

    def dropped_parameter_names(self) -> set[str]:
        """Names (in the transformers model) of the parameters of the layers this step skips."""
        return {f"encoder.layers.{i}.{n}" for i in self.layer_drops for n, _ in self.layers[i].named_parameters()}

    def _linear_input_mode(self) -> contextlib.AbstractContextManager:
        """ContiguousLinearInputs where the model runs CPU-tuned; on a GPU its copies cost time and
        memory and buy nothing. Decided by where the weights are, so the forward pass and its
        recomputation agree."""
        on_cpu = cpu_tuned(next(self.model.encoder.parameters()).device)
        return ContiguousLinearInputs() if on_cpu else contextlib.nullcontext()

    def _zero_padding(self, _module, _inputs, output):  # noqa: ANN001, ANN202 - output is (B, C, T)
        return output if self._mask is None else output * self._mask[:, None, :].to(output.dtype)

    def _record_input(self, _module, args, kwargs):  # noqa: ANN001, ANN202
        self._states.append(args[0] if args else kwargs["hidden_states"])

    def _record_output(self, _module, _inputs, output):  # noqa: ANN001, ANN202
        self._states.append(output[0] if isinstance(output, tuple) else output)

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.encoder.layers

    def _cnn(self, wav: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """CNN features. Utterances of equal length (training crops) go through in one call on a GPU:
        GroupNorm normalises each example over its own time axis, so nothing mixes across the batch.
        Otherwise one utterance at a time: GroupNorm never sees padding, and on a CPU this is also
        faster and far lighter than one batched call (its 512-channel activations at 200 Hz would
        not fit in cache). w2v-BERT: its filterbanks, batched (frames never mix)."""
        if self.fbank is not None:
            return self.fbank(wav, lengths)
        fe = self.model.feature_extractor
        n = [wav.shape[1]] * len(wav) if lengths is None else lengths.tolist()  # one host sync, not one per item
        if len(set(n)) == 1 and not cpu_tuned(wav.device):
            return fe(wav[:, : n[0]]).transpose(1, 2), None
        feats = [fe(wav[i:i + 1, : n[i]]).transpose(1, 2)[0] for i in range(len(wav))]
        if len({len(f) for f in feats}) == 1:
            return torch.stack(feats), None
        frames = torch.tensor([len(f) for f in feats], device=wav.device)
        padded = nn.utils.rnn.pad_sequence(feats, batch_first=True)
        mask = torch.arange(padded.shape[1], device=wav.device)[None, :] < frames[:, None]
        return padded, mask

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """(L+1 hidden states of shape (B, T, D), frame mask (B, T) or None when nothing is padded)."""
        if self.normalize_waveform:
            wav = _normalize(wav, lengths)
        feats, mask = self._cnn(wav, lengths)
        if self.training and feats.requires_grad:  # the CNN trains: its gradient scaled, the forward pass unchanged
            feats = ScaleGrad.apply(feats, self.cnn_grad_scale)
        hidden = self.model.feature_projection(feats)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        self._states, self._mask = [], mask
        try:
            with self._linear_input_mode():
                out = self.model.encoder(hidden, attention_mask=mask)
            states = self._states
        finally:
            self._states, self._mask = [], None
        if len(states) != self.num_layers + 1:
            raise VoxadaptError(f"expected {self.num_layers + 1} hidden states, got {len(states)} (layerdrop?)")
        if self.stable_layer_norm:  # pre-LN encoders apply their final LayerNorm after the last layer
            states[-1] = out.last_hidden_state
        for i, adapter in zip(self.inter_layers, self.inter_adapters):  # state i+1 is layer i's output
            states[i + 1] = states[i + 1] + self.adapter_config.scale * adapter(states[i + 1])
        return states, mask


def _skip_or_forward(layer: nn.Module, hidden_states: torch.Tensor, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
    """A transformer layer's forward under LayerDrop: in training, a layer this step drops returns its
    input (with WavLM's position bias, which the layers above read); otherwise the layer's own forward."""
    if layer.training and layer.dropped:
        return (hidden_states, kwargs["position_bias"]) if "position_bias" in kwargs else hidden_states
    return type(layer).forward(layer, hidden_states, *args, **kwargs)


class ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward pass multiplies the gradient by `scale` (fairseq's
    feature_grad_mult): the CNN below gets `scale` times the gradient the layers above pass down."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # noqa: ANN001
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        return grad * ctx.scale, None


def cpu_tuned(device: torch.device) -> bool:
    """Whether the backbone takes its CPU-tuned paths (the CNN one utterance at a time,
    ContiguousLinearInputs) on `device`; on a GPU both cost more than they save."""
    return device.type == "cpu"


class ContiguousLinearInputs(TorchFunctionMode):
    """Give F.linear contiguous inputs. On a strided view (WavLM's attention projects a transposed
    (T, B, D) view; its relative-position gate a permuted one) torch folds the batch into one
    matrix product only when the weight needs a gradient; for a frozen weight it runs a batched
    product against the weight expanded per item, 2-3x slower on a CPU, in the backward pass too:
    that is most of what adapters and LoRA, which freeze those weights, would otherwise save."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        # The mode is off inside this call, so the projections inside multi_head_attention_forward
        # are not seen here: give it a contiguous query (= key = value) instead.
        if func is F.multi_head_attention_forward and not args[0].is_contiguous():
            q = args[0].contiguous()
            args = (q, *(q if a is args[0] else a for a in args[1:3]), *args[3:])
        elif func is F.linear and args[0].dim() > 2 and not args[0].is_contiguous():
            args = (args[0].contiguous(), *args[1:])
        return func(*args, **(kwargs or {}))


def _normalize(wav: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Zero mean, unit variance per utterance over its real samples (what do_normalize models expect)."""
    if lengths is None:
        return (wav - wav.mean(1, keepdim=True)) / torch.sqrt(wav.var(1, keepdim=True, unbiased=False) + 1e-7)
    mask = (torch.arange(wav.shape[1], device=wav.device)[None, :] < lengths[:, None]).to(wav.dtype)
    n = lengths[:, None].to(wav.dtype)
    mean = (wav * mask).sum(1, keepdim=True) / n
    var = (((wav - mean) * mask) ** 2).sum(1, keepdim=True) / n
    return (wav - mean) / torch.sqrt(var + 1e-7) * mask


def build_hf_model(model_type: str, path: str, arch: dict, seed: int, random_init: bool = False):  # noqa: ANN201
    """The transformers model: pre-trained from a local dir, or randomly initialised from `arch`
    (or, with `random_init`, from the local dir's architecture)."""
    if path and random_init:
        local_type, data = read_local_config(Path(path))
        keep = {k: v for k, v in data.items() if k not in ("model_type", "architectures", "transformers_version")}
        return build_hf_model(local_type, "", keep, seed)
    if path:
        p = Path(path)
        local_type, _ = read_local_config(p)
        if model_type and local_type != model_type:
            raise VoxadaptError(located(p / "config.json", None, f"a {local_type} model, the config says {model_type}",
                                        "set model.backbone.type to match or point at another model"))
        _, model_cls = model_classes(local_type)
        try:
            return model_cls.from_pretrained(p, local_files_only=True, layerdrop=0.0)
        except (OSError, ValueError) as err:
            raise VoxadaptError(located(p, None, f"cannot load the model ({first_line(err)})",
                                        "check the directory holds the weights saved with it")) from None
    return random_hf_model(model_type, arch, seed)


def require_weights(b: BackboneConfig) -> None:
    """The config must say where the weights come from: an empty path without arch would build
    transformers' default architecture (WavLM Base's 94M parameters) with random weights."""
    if not b.source:
        raise VoxadaptError(f"model.backbone.path is empty: this config needs pre-trained {b.type} weights; give "
                            "--ssl_model DIR (a local save_pretrained directory), or model.backbone.arch for a "
                            "randomly initialised config-only model")


def _model_dir(b: BackboneConfig) -> Path:
    p = Path(b.path)
    reject_checkpoint_file(p)
    if not p.is_dir():
        raise VoxadaptError(located(p, None, "model.backbone.path not found",
                                    "give --ssl_model an existing local save_pretrained directory"))
    return p


# What from_pretrained reads of a save_pretrained directory (single or sharded weights).
MODEL_FILES = ("config.json", "preprocessor_config.json", "*.safetensors", "*.bin", "*.index.json")


def backbone_digest(b: BackboneConfig) -> str:
    """The backbone as fingerprints hold it: a digest of its directory's config and weights, so the
    same model under another path (./models/x, models/x, a copy) is the same; '' for a config-only
    model (its arch is in the config)."""
    require_weights(b)
    if not b.path:
        return ""
    p = _model_dir(b)
    read_local_config(p)  # a directory without config.json is named here, not hashed
    files = sorted({f for pattern in MODEL_FILES for f in p.glob(pattern) if f.is_file()})
    return content_digest(part for f in files for part in (f.name.encode(), file_digest(f).encode()))


def waveform_normalisation(b: BackboneConfig) -> tuple[bool, str]:
    """(whether waveforms are normalised to zero mean and unit variance, where that was decided).
    Never a silent default for a saved model: WavLM Large needs it on, Base+ off."""
    if b.type == "w2v-bert":
        if b.normalize_waveform:
            raise VoxadaptError("model.backbone.normalize_waveform: a w2v-bert backbone normalises its filterbanks, "
                                "not the waveform; leave it unset or false")
        return False, "w2v-bert: filterbanks normalised per utterance instead"
    if b.normalize_waveform is not None:
        return b.normalize_waveform, "model.backbone.normalize_waveform"
    if not b.path:
        return False, "default for a config-only model (model.backbone.arch)"
    pre = _model_dir(b) / "preprocessor_config.json"
    fix = ("set model.backbone.normalize_waveform to true or false, as the model was pre-trained "
           "(WavLM Large: true, WavLM Base+: false)")
    if not pre.is_file():
        raise VoxadaptError(located(pre, None, "missing, so nothing says whether the model expects normalised waveforms", fix))
    data = read_json(pre, fix)
    do_normalize = data.get("do_normalize") if isinstance(data, dict) else None
    if not isinstance(do_normalize, bool):
        raise VoxadaptError(located(pre, None, "has no do_normalize: true/false", fix))
    return do_normalize, str(pre)


def check_backbone(b: BackboneConfig) -> None:
    """Before a training stage writes anything: the weights are named, found, and the waveform
    normalisation is decided."""
    require_weights(b)
    if b.path:
        read_local_config(_model_dir(b))
        if b.type == "w2v-bert":
            check_preprocessor(_model_dir(b))
    waveform_normalisation(b)


def backbone_from_config(b: BackboneConfig, seed: int):  # noqa: ANN201 - a transformers model
    """The configured backbone before fine-tuning (also the L2-SP reference)."""
    require_weights(b)
    return build_hf_model(b.type, b.path, b.arch, seed, b.random_init)
