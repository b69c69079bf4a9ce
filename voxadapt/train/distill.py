"""Knowledge distillation from a frozen teacher into the class-token model's distillation token."""

from __future__ import annotations

import torch
from torch import nn

from voxadapt.config import DistillConfig
from voxadapt.errors import VoxadaptError
from voxadapt.models.clstoken import kd_loss
from voxadapt.models.loading import load_speaker_model


class Distiller(nn.Module):
    """A frozen teacher's softened predictions, matched by the student's distillation token."""

    def __init__(self, cfg: DistillConfig, classes: list[str], embed_dim: int, device: torch.device):
        super().__init__()
        loaded = load_speaker_model(cfg.teacher, str(device))
        teacher, teacher_head, teacher_classes = loaded.model, loaded.head, loaded.classes
        if teacher_head is None or teacher_classes is None:
            raise VoxadaptError(f"{cfg.teacher}: a package has no classification head; give the teacher's "
                                "trained-model directory (exp/<name>/model)")
        if teacher_classes != classes:
            raise VoxadaptError(f"{cfg.teacher}: the teacher was trained on {len(teacher_classes)} classes that are "
                                f"not the student's {len(classes)}; train the teacher on the same data and settings")
        for p in list(teacher.parameters()) + list(teacher_head.parameters()):
            p.requires_grad_(False)
        self.teacher, self.teacher_head = teacher, teacher_head
        self.head = nn.Linear(embed_dim, len(classes))  # the distillation token's own classifier
        self.weight, self.temperature = cfg.weight, cfg.temperature

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()  # the teacher is always in inference mode
        return self

    @torch.no_grad()
    def teacher_logits(self, wav: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
        """s * cos at the scale the teacher's head was trained with (saved with it), margin-free."""
        return self.teacher_head.scale * self.teacher_head.cosine(self.teacher(wav), classes)

    def loss(self, wav: torch.Tensor, distill_emb: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
        teacher = self.teacher_logits(wav, classes)
        with torch.autocast(wav.device.type, enabled=False):  # both sides' logits in fp32, as the AAM head's
            student = self.head(distill_emb.float())
            return kd_loss(student if classes is None else student[:, classes], teacher, self.temperature)
