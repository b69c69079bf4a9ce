"""Config sections of training: phases (with DropClass/DropAdapt), stages 3-4, SSL pre-training."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from voxadapt.config.checks import require


@dataclass
class DropClassConfig:
    """DropClass (Luu, Bell, Renals, Odyssey 2020): every N steps a fresh random set of K classes
    leaves the data and the head."""

    every_steps: int = 0  # N; 0: off
    drop: int = 0  # K
    reinit_head: bool = False  # re-initialise the classification layer at each draw
    reinit_optimizer: bool = False  # with reinit_head: also reset the head's optimiser state (the authors keep it)
    # softmax only over the classes present in the batch, in place of the random draws (the authors'
    # drop_per_batch); with_draws: true keeps the draws too (the batch's classes among the kept ones)
    batch_classes_only: bool = False
    with_draws: bool = False

    def __post_init__(self) -> None:
        require(self.every_steps >= 0 and self.drop >= 0, "dropclass every_steps and drop must be >= 0")
        require(not self.drop or self.every_steps >= 1, "dropclass.every_steps must be >= 1 when drop > 0")
        require(not self.batch_classes_only or not self.drop or self.with_draws,
                "dropclass.batch_classes_only replaces the random draws (as the authors' drop_per_batch does): set "
                "dropclass.drop 0, or dropclass.with_draws true to draw K classes out of the data as well")
        require(not self.with_draws or (self.batch_classes_only and self.drop),
                "dropclass.with_draws needs batch_classes_only true and drop > 0")
        require(not self.reinit_head or self.drop, "dropclass.reinit_head re-initialises the head at each random draw: "
                "it needs dropclass.drop > 0")
        require(not self.reinit_optimizer or self.reinit_head, "dropclass.reinit_optimizer needs reinit_head true")


@dataclass
class DropAdaptConfig:
    """DropAdapt (Luu, Bell, Renals, Odyssey 2020): every N steps, permanently drop the K classes least probable on the
    (unlabelled) adaptation data, from the head and the data."""

    every_steps: int = 0  # N; 0: off
    drop: int = 0  # K
    # data_only: the head keeps all rows, and every round ranks all classes afresh and keeps all but the
    # K least probable in the data (the authors' drop_adapt_onlydata); data_only_cumulative: the head keeps all rows,
    # the data loses K more of the kept classes each round; random: K random kept classes (the control)
    variant: Literal["standard", "data_only", "data_only_cumulative", "random"] = "standard"
    # the classes' probabilities: softmax of the cosines (the authors' aggregate_probs, through
    # forward_drop without labels) or of scale x cosine (the training logits without the margin)
    rank: Literal["cosine", "scaled"] = "cosine"
    adaptation_dir: str = ""  # a data dir; empty: the enrolment side of the test sets' trial lists
    max_utts: int = 0  # 0: the whole set; else a random subset of this many (each round scores them all)
    crop_seconds: float = 3.0

    def __post_init__(self) -> None:
        require(self.every_steps >= 0 and self.drop >= 0, "dropadapt every_steps and drop must be >= 0")
        require(not self.drop or self.every_steps >= 1, "dropadapt.every_steps must be >= 1 when drop > 0")
        require(self.crop_seconds > 0.1, "dropadapt.crop_seconds must be > 0.1")
        require(self.max_utts >= 0, "dropadapt.max_utts must be >= 0 (0: the whole adaptation set)")


@dataclass
class PhaseConfig:
    """One training run over the data (stage 3 runs train.phases, stage 4 adapt.phases, in order)."""

    name: str = "main"
    epochs: int = 10
    trainable_layers: int = -1  # -1: every transformer layer (+ its input embedding); 0: frozen; k: top k
    # With trainable_layers -1: whether the input embedding (feature projection, positional convolution)
    # and the encoder's own LayerNorm train too. true: as the MHFA authors' WeSpeaker recipe (every
    # parameter in the optimiser); false: as their SLT22 code (only the transformer layers).
    train_embedding: bool = True
    # > 0: the CNN feature encoder trains too (needs trainable_layers -1), at the input embedding's lr,
    # with its gradient multiplied by this (the forward pass unchanged); 0: the CNN stays frozen.
    cnn_grad_scale: float = 0.0
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 5e-3  # pooling and AAM head
    backbone_lr: float = 2e-5  # the top transformer layer (layer_decay_from "top") or the bottom one ("bottom")
    adapter_lr: float = 1e-3  # adapters, LoRA factors (and LayerNorms trained with them)
    # Layer-wise rates. "top": the top layer gets backbone_lr, layer i (0 = bottom) backbone_lr *
    # layer_decay^(L-1-i), so upper layers move most; "bottom": the MHFA authors' SLT22 code, layer i
    # gets backbone_lr * layer_decay^i, so the bottom layer gets backbone_lr and upper layers less.
    layer_decay: float = 1.0
    layer_decay_from: Literal["top", "bottom"] = "top"
    # LayerDrop: in training, each transformer layer is skipped with this probability (its hidden state
    # is then its input), drawn per step from the seed, the same on every process. 0: off.
    layerdrop: float = 0.0
    weight_decay: float = 1e-4
    momentum: float = 0.9  # SGD
    warmup_epochs: float = 0.0
    schedule: Literal["constant", "exponential", "step", "cosine"] = "step"
    final_lr_ratio: float = 0.01  # exponential / cosine: last lr relative to the peak
    step_gamma: float = 0.95  # step: multiply by this every epoch
    margin: float = 0.2
    margin_ramp: list[float] = field(default_factory=lambda: [0.0, 0.0])  # [start, end] epochs of the 0 -> margin ramp
    scale: float = 30.0
    # Inter-top-k: the k hardest non-target classes of each example get an extra margin m'
    # (logit s cos(theta - m')); m' grows with the margin ramp. 0: plain AAM.
    inter_topk: int = 0
    inter_margin: float = 0.0
    crop_seconds: float = 0.0  # 0: loader.crop_seconds
    batch_size: int = 0  # 0: loader.batch_size
    l2sp: Literal["none", "normalized", "plain"] = "none"
    l2sp_weight: float = 0.01
    grad_clip: float = 0.0  # max gradient norm; 0: off
    accum_steps: int = 1
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # GPU speed options (the maths is unchanged, so they are not part of the phase's fingerprint: a
    # run may resume with them changed): fused AdamW kernels on CUDA; torch.compile of the encoder
    # and pooling; activation checkpointing of the transformer layers (recomputed in the backward
    # pass: less memory for about a third more compute).
    fused_optimizer: bool = True
    compile: bool = False
    activation_checkpointing: bool = False
    checkpoint_every_steps: int = 0  # 0: at the end of each epoch only
    # The AAM head's rows at the start. random: Xavier-uniform. imprint: each class's rows = the
    # normalised mean of the L2-normalised embeddings of up to imprint_crops_per_class crops of its
    # examples (distinct examples, seeded positions, no augmentation), from the network as the phase
    # starts (docs/methods.md). Only the first phase of train.phases has a fresh head: later phases
    # (and stage 4's) continue the previous phase's head. A resumed phase keeps its checkpoint's head.
    head_init: Literal["random", "imprint"] = "random"
    imprint_crops_per_class: int = 2
    average_last: int = 1  # the phase's model = average of its last K epoch checkpoints
    dropclass: DropClassConfig = field(default_factory=DropClassConfig)
    dropadapt: DropAdaptConfig = field(default_factory=DropAdaptConfig)

    def fingerprint(self) -> dict:
        """What the phase's results depend on: everything but the speed options."""
        d = asdict(self)
        for key in ("fused_optimizer", "compile", "activation_checkpointing"):
            del d[key]
        # Keys that changed what a drop method did when they came count only where they act (elsewhere
        # they change nothing). No value of theirs reproduces the method as it was, so they are not in
        # voxadapt/compat.py's ADDED: a marker made before them, of a phase using the method, is refused.
        for section, key, acts in (("dropadapt", "rank", self.dropadapt.drop and self.dropadapt.variant != "random"),
                                   ("dropclass", "reinit_optimizer", self.dropclass.reinit_head),
                                   ("dropclass", "with_draws", self.dropclass.with_draws)):
            if not acts:
                del d[section][key]
        if self.head_init != "imprint":  # the crops count only where the head is imprinted
            del d["imprint_crops_per_class"]
        return d

    def __post_init__(self) -> None:
        require(not (self.dropclass.drop and self.dropadapt.drop), "use dropclass or dropadapt in a phase, not both")
        require(bool(self.name) and self.name.replace("_", "").replace("-", "").isalnum(),
                 "name must be a word (it names exp/<name>/<phase>/)")
        require(self.epochs >= 1, "epochs must be >= 1")
        require(self.trainable_layers >= -1, "trainable_layers must be -1 (all), 0 (frozen) or k > 0")
        require(0 <= self.cnn_grad_scale <= 1, "cnn_grad_scale must be in [0, 1] (0: the CNN stays frozen)")
        require(not self.cnn_grad_scale or self.trainable_layers == -1,
                 "cnn_grad_scale > 0 trains the CNN below every transformer layer: set trainable_layers -1 or cnn_grad_scale 0")
        require(self.lr > 0 and self.backbone_lr >= 0 and 0 < self.layer_decay <= 1, "need lr > 0, backbone_lr >= 0, "
                 "0 < layer_decay <= 1")
        require(0 <= self.layerdrop < 1, "layerdrop must be in [0, 1) (0: off)")
        require(not (self.layerdrop and self.compile),
                 "layerdrop > 0 with compile: true would recompile the encoder for each pattern of dropped layers; set one of them off")
        require(0 <= self.margin < 1.5 and self.scale > 0, "need 0 <= margin < 1.5 and scale > 0")
        require(self.inter_topk >= 0 and 0 <= self.inter_margin < 0.5, "need inter_topk >= 0 and 0 <= inter_margin < 0.5")
        require(not (self.inter_topk and self.inter_margin and not self.margin),
                 "inter_margin follows the margin (m' scaled by the current margin / margin): set margin > 0")
        require(len(self.margin_ramp) == 2 and 0 <= self.margin_ramp[0] <= self.margin_ramp[1],
                 "margin_ramp must be [start_epoch, end_epoch]")
        require(0 < self.final_lr_ratio <= 1 and 0 < self.step_gamma <= 1, "final_lr_ratio and step_gamma in (0, 1]")
        require(self.accum_steps >= 1 and self.average_last >= 1 and self.grad_clip >= 0,
                 "accum_steps and average_last must be >= 1, grad_clip >= 0")
        require(self.average_last <= self.epochs, "average_last cannot exceed epochs")
        require(self.crop_seconds >= 0 and self.batch_size >= 0 and self.checkpoint_every_steps >= 0,
                 "crop_seconds, batch_size and checkpoint_every_steps must be >= 0")
        require(self.imprint_crops_per_class >= 1, "imprint_crops_per_class must be >= 1")


@dataclass
class TrainConfig:
    phases: list[PhaseConfig] = field(default_factory=lambda: [PhaseConfig()])
    device: str = "auto"  # auto: cuda when available, else cpu
    deterministic: bool = False  # bit-exact CPU runs (kill/resume tests); slower
    num_threads: int = 0  # torch threads per process; 0: torch's default
    tf32: bool = True  # on CUDA, float32 matmuls and convolutions in TF32 (what bf16 autocast leaves in fp32)
    # A step whose loss or gradient norm is not finite is skipped; this many in a row stop the run.
    max_nonfinite_steps: int = 10
    # torchrun: how long a collective (e.g. the gradient all-reduce) may wait for a rank. Rank 0's
    # own work (validation, DropAdapt scoring, checkpoints, averaging) is waited for without limit.
    collective_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        names = [p.name for p in self.phases]
        require(len(set(names)) == len(names), "phase names must be unique")
        require(self.max_nonfinite_steps >= 1, "max_nonfinite_steps must be >= 1")
        require(self.collective_timeout_s > 0, "collective_timeout_s must be > 0")
        require(all(p.head_init == "random" for p in self.phases[1:]),
                "head_init imprint is for the first phase only: later phases continue the previous phase's head")


@dataclass
class AdaptConfig:
    """Stage 4: more phases from the stage-3 model (e.g. large-margin fine-tuning)."""

    phases: list[PhaseConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        require(all(p.head_init == "random" for p in self.phases),
                "head_init imprint is for train.phases' first phase only: stage 4 continues stage 3's head")




# ------------------------------------------------------------------------------ pre-training


@dataclass
class PretrainConfig:
    """Self-supervised pre-training of model.backbone.arch (local/pretrain_ssl.sh; not a run.sh stage).

    HuBERT-style masked prediction of k-means units of MFCCs, with WavLM-style denoising (some
    inputs get noise or an overlapping second utterance; the targets stay those of the clean one).
    """

    data_dir: str = ""  # any Kaldi data dir (labels unused); empty: render unlabeled synthetic speakers
    speakers: int = 200  # synthetic: speakers disjoint from the embedded corpus (own seed and ids)
    utts_per_speaker: int = 12
    corpus_seed: int = 7
    clusters: int = 100
    kmeans_frames: int = 200_000
    crop_seconds: float = 2.0
    batch_size: int = 32
    steps: int = 3000
    lr: float = 5.0e-4
    warmup_steps: int = 300
    weight_decay: float = 0.01
    mask_prob: float = 0.08  # span starts per frame
    mask_length: int = 10
    noise_prob: float = 0.3  # inputs corrupted for denoising
    checkpoint_every_steps: int = 200
    num_workers: int = 1
    out_dir: str = "models/tiny_wavlm"

    def __post_init__(self) -> None:
        require(self.speakers >= 1 and self.utts_per_speaker >= 1, "speakers and utts_per_speaker must be >= 1")
        require(self.clusters >= 2 and self.kmeans_frames >= self.clusters, "need clusters >= 2, kmeans_frames >= clusters")
        require(self.crop_seconds >= 0.5 and self.batch_size >= 1 and self.steps >= 1, "crop_seconds >= 0.5, "
                 "batch_size and steps >= 1")
        require(0 < self.mask_prob < 1 and self.mask_length >= 1 and 0 <= self.noise_prob <= 1,
                 "mask_prob in (0, 1), mask_length >= 1, noise_prob in [0, 1]")
