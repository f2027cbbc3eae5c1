"""Hugging Face models as backbones: ``model.backbone: hf:<hub name or local folder>`` wraps any ``AutoModel`` (a
text encoder such as BERT/XLM-R, or an audio encoder such as wav2vec2/HuBERT) as a backbone with ``out_features``.

The interface every backbone offers the encoder and the methods: ``forward(inputs) -> (B, D)`` pooled features,
and ``out_features``. This one also offers ``sequence(inputs) -> (hidden (B, T, D), mask (B, T))``, the per-frame
states a CTC head reads, and ``backbone_parameters()``. Inputs are the dicts the text and audio modalities make
(``input_ids``/``input_values`` with ``attention_mask``); they are passed to the model as keyword arguments.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from torch import nn

from ..errors import TransferlabError


def _hf_error(name: str, exc: Exception) -> TransferlabError:
    offline = " This machine is offline (HF_HUB_OFFLINE is set)." if os.environ.get("HF_HUB_OFFLINE") else ""
    return TransferlabError(
        f"cannot load the Hugging Face model '{name}' ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}).{offline} "
        f"Give model.backbone: hf:<local folder> with config.json and the weights (save_pretrained writes one), or a "
        f"hub name that is in the Hugging Face cache")


class HFEncoder(nn.Module):
    """An ``AutoModel`` with pooling: ``cls`` (the first position's state, BERT's [CLS]) or ``mean`` (the mean of the
    states under the attention mask; for audio the mask is mapped to the model's frame rate).

    Freezing: ``freeze_embeddings`` (token/position embeddings of a text model), ``freeze_feature_encoder`` (the
    convolutional waveform encoder of wav2vec2-style models, as their fine-tuning recipes do), ``freeze_layers``
    (the first k transformer layers). Frozen parameters get no gradient and no optimizer state."""

    def __init__(self, model: nn.Module, pooling: Literal["cls", "mean"] = "mean", *, freeze_embeddings: bool = False,
                 freeze_feature_encoder: bool = False, freeze_layers: int = 0) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise TransferlabError(f"model.hf.pooling must be cls or mean; got {pooling!r}")
        self.model = model
        self.pooling = pooling
        self.out_features = int(model.config.hidden_size)
        if freeze_embeddings:
            embeddings = getattr(model, "embeddings", None)
            if embeddings is None:
                raise TransferlabError(f"model.hf.freeze_embeddings: {type(model).__name__} has no .embeddings")
            embeddings.requires_grad_(False)
        if freeze_feature_encoder:
            extractor = getattr(model, "feature_extractor", None)
            if extractor is None:
                raise TransferlabError(f"model.hf.freeze_feature_encoder: {type(model).__name__} is not a wav2vec2-style "
                                       f"audio model (no .feature_extractor)")
            extractor.requires_grad_(False)
        if freeze_layers:
            layers = self.layers()
            if freeze_layers > len(layers):
                raise TransferlabError(f"model.hf.freeze_layers={freeze_layers}, but the model has {len(layers)} layers")
            for layer in layers[:freeze_layers]:
                layer.requires_grad_(False)

    def layers(self) -> nn.ModuleList:
        encoder = getattr(self.model, "encoder", None)
        for attr in ("layer", "layers"):
            found = getattr(encoder, attr, None)
            if isinstance(found, nn.ModuleList):
                return found
        raise TransferlabError(f"cannot find the transformer layers of {type(self.model).__name__}")

    def backbone_parameters(self):
        return self.model.parameters()

    def lr_stages(self) -> list[list[nn.Parameter]]:
        """Stages for layer-wise learning-rate decay: everything before the first transformer layer (embeddings; for
        audio the waveform encoder, projection and positional convolution), then one stage per layer; what comes
        after the layers (a final norm, a pooler) joins the last layer's stage."""
        layers = self.layers()
        in_layers = {id(p) for layer in layers for p in layer.parameters()}
        stages: list[list[nn.Parameter]] = [[], *([p for p in layer.parameters()] for layer in layers)]
        encoder = getattr(self.model, "encoder", None)
        after = {id(p) for name in ("pooler",) for p in getattr(self.model, name, nn.Module()).parameters()}
        after |= {id(p) for p in getattr(encoder, "layer_norm", nn.Module()).parameters()} \
            if getattr(self.model.config, "do_stable_layer_norm", False) else set()
        for p in self.model.parameters():
            if id(p) not in in_layers:
                stages[-1 if id(p) in after else 0].append(p)
        return stages

    def sequence(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-position hidden states ``(B, T, D)`` and the mask of real positions ``(B, T)`` at the model's rate."""
        hidden = self.model(**inputs).last_hidden_state
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        elif mask.shape[1] != hidden.shape[1]:  # audio: samples -> frames
            mask = self.model._get_feature_vector_attention_mask(hidden.shape[1], mask)
        return hidden, mask

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if not isinstance(inputs, dict):
            raise TransferlabError("a Hugging Face backbone takes dict inputs (text or audio data); this data is "
                                   f"{type(inputs).__name__}. Use an image or feature backbone for it")
        hidden, mask = self.sequence(inputs)
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def create_hf_encoder(name: str, *, pooling: str = "mean", from_config: bool = False, freeze_embeddings: bool = False,
                      freeze_feature_encoder: bool = False, freeze_layers: int = 0) -> HFEncoder:
    """``AutoModel.from_pretrained(name)`` (hub name or local folder); ``from_config=True`` builds the same
    architecture with random weights (``AutoConfig`` + ``AutoModel.from_config``)."""
    from transformers import AutoConfig, AutoModel

    try:
        if from_config:
            model = AutoModel.from_config(AutoConfig.from_pretrained(name))
        else:
            model = AutoModel.from_pretrained(name)
    except (OSError, ValueError, KeyError) as exc:
        raise _hf_error(name, exc) from None
    return HFEncoder(model, pooling, freeze_embeddings=freeze_embeddings,
                     freeze_feature_encoder=freeze_feature_encoder, freeze_layers=freeze_layers)
