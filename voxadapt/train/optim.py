"""What trains and how fast: trainable layers, layer-wise learning rates, schedules, margin ramp."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from voxadapt.config import PhaseConfig
from voxadapt.models.aam import AAMSoftmax
from voxadapt.models.adapters import is_adapter_param
from voxadapt.models.speaker import SpeakerModel


@dataclass
class ParamGroup:
    name: str
    params: list[nn.Parameter]
    lr: float


def _own(module: nn.Module) -> list[nn.Parameter]:
    """A module's pre-trained parameters (adapter and LoRA parameters excluded)."""
    return [p for n, p in module.named_parameters() if not is_adapter_param(n)]


def _own_parts(module: nn.Module, *names: str) -> list[nn.Parameter]:
    """_own of those named submodules `module` has (w2v-BERT has no positional convolution, encoder
    LayerNorm or CNN)."""
    return [p for n in names if isinstance(getattr(module, n, None), nn.Module) for p in _own(getattr(module, n))]


def adapter_params(model: SpeakerModel) -> list[nn.Parameter]:
    """Adapters, LoRA factors and, if so configured, the transformer's LayerNorms."""
    bb = model.backbone
    out = [p for n, p in bb.named_parameters() if is_adapter_param(n)]
    if bb.adapter_config.enabled and bb.adapter_config.train_layer_norms:
        out += [p for m in bb.model.encoder.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()]
    return out


def backbone_groups(model: SpeakerModel) -> list[tuple[str, list[nn.Parameter], int]]:
    """(name, pre-trained params, depth below the top layer) for the backbone's trainable parts.

    Depth 0 is the top transformer layer; the input embedding (feature projection, positional
    convolution and, for post-LN encoders, the input LayerNorm) sits below layer 0, at depth L.
    The CNN feature encoder ("cnn", trained only with a phase's cnn_grad_scale > 0) gets the input
    embedding's depth, so its lr: its gradient is already scaled down instead.
    """
    bb = model.backbone
    enc = bb.model.encoder
    L = bb.num_layers
    groups = [(f"layer{i}", _own(layer), L - 1 - i) for i, layer in enumerate(bb.layers)]
    embed = _own(bb.model.feature_projection) + _own_parts(enc, "pos_conv_embed")
    norm = _own_parts(enc, "layer_norm")
    if bb.stable_layer_norm:  # its encoder LayerNorm normalises the top layer's output
        groups[-1][1].extend(norm)
    else:
        embed += norm
    groups.append(("embedding", embed, L))
    groups.append(("cnn", _own_parts(bb.model, "feature_extractor"), L))
    return groups


def set_trainable(model: SpeakerModel, head: AAMSoftmax, trainable_layers: int, cnn_grad_scale: float = 0.0,
                  train_embedding: bool = True) -> None:
    """Pooling, head and adapters always train; of the pre-trained backbone, the top
    `trainable_layers` transformer layers (-1: all, with the input embedding and the encoder's
    LayerNorm unless `train_embedding` is false) and, with `cnn_grad_scale` > 0, the CNN feature
    encoder, its gradient scaled by that factor."""
    L = model.backbone.num_layers
    if trainable_layers > L:
        raise ValueError(f"trainable_layers {trainable_layers} exceeds the backbone's {L} layers")
    if cnn_grad_scale and trainable_layers != -1:
        raise ValueError("cnn_grad_scale > 0 needs trainable_layers -1")
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    for name, params, depth in backbone_groups(model):
        if name == "cnn":
            on = cnn_grad_scale > 0
        else:
            on = trainable_layers == -1 or (name != "embedding" and depth < trainable_layers)
        for p in params:
            p.requires_grad_(on)
    if not train_embedding:  # the MHFA authors' SLT22 optimiser: transformer layers only
        hf = model.backbone.model
        for p in _own(hf.feature_projection) + _own_parts(hf.encoder, "pos_conv_embed", "layer_norm"):
            p.requires_grad_(False)
    model.backbone.cnn_grad_scale = cnn_grad_scale
    for p in list(model.pooling.parameters()) + list(head.parameters()) + adapter_params(model):
        p.requires_grad_(True)


def decay_exponent(phase: PhaseConfig, depth: int, num_layers: int) -> int:
    """The power of layer_decay for a group `depth` layers below the top one. "top": the depth
    itself; "bottom" (the MHFA authors' SLT22 code): the layer's index from the bottom, the input
    embedding and CNN (which that code never trains) at the bottom layer's rate."""
    return depth if phase.layer_decay_from == "top" else max(num_layers - 1 - depth, 0)


def param_groups(model: SpeakerModel, head: AAMSoftmax, phase: PhaseConfig) -> list[ParamGroup]:
    groups = [ParamGroup("pooling", list(model.pooling.parameters()) + list(head.parameters()), phase.lr)]
    adapters = adapter_params(model)
    if adapters:
        groups.append(ParamGroup("adapters", adapters, phase.adapter_lr))
    taken = {id(p) for p in adapters}
    for name, params, depth in backbone_groups(model):
        trainable = [p for p in params if p.requires_grad and id(p) not in taken]
        if trainable and phase.backbone_lr > 0:
            power = decay_exponent(phase, depth, model.backbone.num_layers)
            groups.append(ParamGroup(name, trainable, phase.backbone_lr * phase.layer_decay**power))
    return groups


def make_optimizer(groups: list[ParamGroup], phase: PhaseConfig, fused: bool = False) -> torch.optim.Optimizer:
    """`fused`: one CUDA kernel for all parameters' update instead of a loop of small ones."""
    spec = [{"params": g.params, "lr": g.lr, "initial_lr": g.lr, "name": g.name} for g in groups]
    if phase.optimizer == "sgd":
        return torch.optim.SGD(spec, lr=phase.lr, momentum=phase.momentum, weight_decay=phase.weight_decay, nesterov=True,
                               fused=fused or None)
    return torch.optim.AdamW(spec, lr=phase.lr, weight_decay=phase.weight_decay, fused=fused or None)


def lr_factor(phase: PhaseConfig, epoch_progress: float) -> float:
    """Multiplier of every group's initial lr at fractional epoch `epoch_progress`."""
    if phase.warmup_epochs > 0 and epoch_progress < phase.warmup_epochs:
        return max(epoch_progress / phase.warmup_epochs, 1e-3)
    span = max(phase.epochs - phase.warmup_epochs, 1e-9)
    u = min(max((epoch_progress - phase.warmup_epochs) / span, 0.0), 1.0)
    if phase.schedule == "exponential":
        return phase.final_lr_ratio**u
    if phase.schedule == "cosine":
        return phase.final_lr_ratio + (1 - phase.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * u))
    if phase.schedule == "step":
        return phase.step_gamma ** math.floor(epoch_progress)
    return 1.0


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor


def margin_at(phase: PhaseConfig, epoch_progress: float) -> float:
    start, end = phase.margin_ramp
    if epoch_progress >= end:
        return phase.margin
    if epoch_progress < start:
        return 0.0
    return phase.margin * (epoch_progress - start) / (end - start)
