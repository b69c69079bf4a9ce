"""Weight imprinting: each class's AAM head rows set to the normalised mean embedding of a few
crops of its examples, from the network as it starts the phase (head_init: imprint).

A random row gives every class a target cosine near 0, so at thousands of classes the loss sits
above ln(classes) until the rows find their speakers; an imprinted row starts at its speaker, so
the first steps already pull the pooling and backbone with a meaningful margin.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch.nn import functional as F

from voxadapt.data.dataset import CropBatchDataset
from voxadapt.data.sampler import BatchSpec
from voxadapt.models.aam import AAMSoftmax
from voxadapt.models.speaker import SpeakerModel

log = logging.getLogger(__name__)


def imprint_specs(labels: np.ndarray, num_classes: int, crops_per_class: int, batch_size: int,
                  seed: int) -> list[BatchSpec]:
    """The crops to embed, in batches: per class, up to `crops_per_class` of its examples (distinct,
    chosen from the seed), each cropped at a position drawn from the seed and the example."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1A9]))
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:crops_per_class] for c in range(num_classes)]
    examples = [int(i) for c in chosen for i in c]
    seeds = [(seed, 0x1A9, i) for i in examples]
    return [BatchSpec(examples[k:k + batch_size], seeds[k:k + batch_size], None)
            for k in range(0, len(examples), batch_size)]


def class_means(model: SpeakerModel, dataset: CropBatchDataset, specs: list[BatchSpec], num_classes: int,
                device: torch.device) -> torch.Tensor:
    """(classes, embed_dim): each class's mean of its crops' L2-normalised embeddings, normalised;
    the model in eval mode (no dropout), then left in the mode it was in."""
    was_training = model.training
    model.eval()
    sums = None
    with torch.inference_mode():
        for spec in specs:
            batch = dataset[spec]
            emb = F.normalize(model(batch["wav"].to(device)).float(), dim=1)
            if sums is None:
                sums = torch.zeros(num_classes, emb.shape[1], device=device)
            sums.index_add_(0, batch["label"].to(device), emb)
    model.train(was_training)
    return F.normalize(sums, dim=1)


def imprint_head(model: SpeakerModel, head: AAMSoftmax, dataset: CropBatchDataset, crops_per_class: int,
                 batch_size: int, seed: int) -> None:
    """Every row of the head set from its class's mean embedding. With sub-centres, each of a
    class's K rows gets the same mean: the closest (first) one takes the class's examples and moves,
    and a copy left at the mean becomes the closest for the examples it moves away from."""
    started = time.time()
    labels, n = dataset.table.label, head.num_classes
    specs = imprint_specs(labels, n, crops_per_class, batch_size, seed)
    means = class_means(model, dataset, specs, n, head.weight.device)
    with torch.no_grad():
        head.weight.copy_(means.repeat_interleave(head.subcenters, dim=0))
    log.info("head imprinted: %d classes from %d crops in %.1f s", n, sum(len(s.examples) for s in specs),
             time.time() - started)
