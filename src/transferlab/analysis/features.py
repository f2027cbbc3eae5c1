"""What a trained model computes on a dataset: the inputs of every diagnostic applied to a run.

* :func:`sample`: at most n samples of a dataset, drawn by a seed (diagnostics cost grows with n).
* :func:`extract`: the features the classifier sees (``representation``), labels and logits.
* :func:`layer_activations`: every encoder layer's output, for layer-wise similarity (CKA).

``method`` is a :class:`~transferlab.methods.Method` (its ``representation``, ``predict_on``,
``classifies`` and ``encoder_for``) and ``transform`` the preprocessing it was trained with; both
are evaluated in eval mode, and the method's mode is restored afterwards.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data import ArrayDataset, iterate_batches
from ..data.streams import Transform
from ..models.layers import encoder_layers


def sample(dataset: ArrayDataset, max_samples: int, seed: int = 0) -> ArrayDataset:
    """At most ``max_samples`` samples of ``dataset``, drawn without replacement by ``seed``."""
    if len(dataset) <= max_samples:
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:max_samples]
    return dataset.subset(torch.sort(order).values)


@torch.no_grad()
def extract(method: nn.Module, dataset: ArrayDataset, transform: Transform | None = None, domain: str = "source",
            batch_size: int = 512) -> dict[str, np.ndarray]:
    """Features (``method.representation``), labels and, when the method classifies, logits of the inputs
    of ``dataset`` as data from ``domain``."""
    was_training = method.training
    method.eval()
    device = next(method.parameters()).device
    features, logits, labels = [], [], []
    try:
        for batch in iterate_batches(dataset, batch_size, device=device, transform=transform):
            features.append(method.representation(batch.x, domain).float().cpu())
            if method.classifies():
                logits.append(method.predict_on(batch.x, domain).float().cpu())
            if batch.y is not None:
                labels.append(batch.y.cpu())
    finally:
        method.train(was_training)
    return {"features": torch.cat(features).numpy(), "labels": torch.cat(labels).numpy() if labels else None,
            "logits": torch.cat(logits).numpy() if logits else None}


@torch.no_grad()
def layer_activations(method: nn.Module, dataset: ArrayDataset, transform: Transform | None = None,
                      domain: str = "target") -> dict[str, np.ndarray]:
    """Each layer's output (flattened per sample) of the encoder for ``domain`` on ``dataset``; layers as in
    :func:`transferlab.models.layers.encoder_layers`, named by their last module."""
    encoder = method.encoder_for(domain)
    names = [layer[-1] for layer in encoder_layers(encoder)]
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    hooks = [encoder.get_submodule(name).register_forward_hook(
        # clone: a following in-place op (ReLU(inplace=True)) would otherwise change the stored output
        lambda module, args, out, name=name: outputs[name].append(out.detach().float().flatten(1).cpu().clone()))
        for name in names]
    was_training = method.training
    method.eval()
    try:
        for batch in iterate_batches(dataset, 512, device=next(method.parameters()).device, transform=transform):
            encoder(batch.x)
    finally:
        for hook in hooks:
            hook.remove()
        method.train(was_training)
    return {name: torch.cat(parts).numpy() for name, parts in outputs.items()}
