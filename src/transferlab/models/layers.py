"""Layer-wise transfer: copy or freeze the first n layers of an encoder (Yosinski et al., "How
transferable are features in deep neural networks?", NeurIPS 2014; partial layer transfer), and the stages that
layer-wise learning-rate decay scales (Howard & Ruder, ULMFiT 2018; Clark et al., ELECTRA 2020).

A *layer* is a module that owns weights (convolution, linear, embedding, ...), in the order the
modules were registered, with a normalisation layer (BatchNorm, LayerNorm, GroupNorm) counted as
part of the layer before it. LeNet + bottleneck has four: conv1, conv2, fc, bottleneck.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def encoder_layers(module: nn.Module) -> list[list[str]]:
    """The layers of ``module``: each a list of the qualified names of the modules it consists of."""
    layers: list[list[str]] = []
    for name, child in module.named_modules():
        if not any(True for _ in child.parameters(recurse=False)):
            continue
        if isinstance(child, _NORMS) and layers:
            layers[-1].append(name)
        else:
            layers.append([name])
    return layers


def _check(module: nn.Module, n: int, what: str) -> list[list[str]]:
    layers = encoder_layers(module)
    if not 0 <= n <= len(layers):
        raise ConfigError(f"{what}={n}, but the encoder has {len(layers)} layers "
                          f"({', '.join('+'.join(layer) for layer in layers)})")
    return layers


def layer_state(module: nn.Module, state: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """The entries of ``state`` (a state dict of ``module``'s architecture) that belong to its first ``n`` layers."""
    prefixes = tuple(f"{name}." for layer in _check(module, n, "model.init_layers")[:n] for name in layer)
    return {k: v for k, v in state.items() if k.startswith(prefixes)}


def freeze_layers(module: nn.Module, n: int) -> None:
    """Stop gradients to the first ``n`` layers (their normalisation statistics still follow the data
    unless the module is put in eval mode)."""
    for layer in _check(module, n, "model.freeze_layers")[:n]:
        for name in layer:
            module.get_submodule(name).requires_grad_(False)


def lr_stages(backbone: nn.Module) -> list[list[nn.Parameter]]:
    """The backbone's parameters in stages, input to output, for layer-wise learning-rate decay: the backbone's own
    ``lr_stages()`` where it has one (a Hugging Face encoder: embeddings, then one stage per transformer layer),
    else its :func:`encoder_layers`."""
    own = getattr(backbone, "lr_stages", None)
    if callable(own):
        return own()
    return [[p for name in layer for p in backbone.get_submodule(name).parameters(recurse=False)]
            for layer in encoder_layers(backbone)]
