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
        try:
            hidden = self.model(**inputs).last_hidden_state
        except ValueError as exc:
            if "mask_length" not in str(exc):
                raise
            config = self.model.config
            raise TransferlabError(
                f"an utterance of this batch is shorter (in frames) than the model's SpecAugment mask "
                f"(mask_time_length={getattr(config, 'mask_time_length', '?')}; {str(exc).splitlines()[0]}). Set a smaller "
                f"mask_time_length and mask_time_min_masks: 0 in the model's config.json (or apply_spec_augment: false), "
                f"or leave out the shortest utterances") from None
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


def train_wordpiece(texts: list[str], vocab_size: int = 8000, *, lowercase: bool = True):
    """A BERT-style WordPiece tokenizer trained on ``texts`` with the ``tokenizers`` library, as a
    ``PreTrainedTokenizerFast`` (``[CLS] … [SEP]``, ``[PAD]`` for padding)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    texts = [t for t in texts if t.strip()]
    if not texts:
        raise TransferlabError("no text to train a tokenizer on")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def new_text_encoder(texts: list[str], folder: str | os.PathLike, *, vocab_size: int = 8000, layers: int = 2,
                     hidden: int = 128, heads: int = 2, max_length: int = 512, seed: int = 0) -> dict:
    """A from-scratch BERT-style encoder for languages or domains without a pretrained checkpoint: a WordPiece
    tokenizer trained on ``texts`` (raw sentences, no labels) and a randomly initialised ``BertModel`` of the given
    size, written with ``save_pretrained`` into ``folder`` so that ``model.backbone: hf:<folder>`` loads both.
    Returns the sizes (vocabulary, parameters, sentences)."""
    from pathlib import Path

    from transformers import BertConfig, BertModel

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise TransferlabError(f"{folder} exists and is not empty; choose a new folder")
    if hidden % heads:
        raise TransferlabError(f"hidden size {hidden} must be a multiple of the number of heads {heads}")
    tokenizer = train_wordpiece(texts, vocab_size)
    torch.manual_seed(seed)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                                 num_attention_heads=heads, intermediate_size=4 * hidden,
                                 max_position_embeddings=max_length, pad_token_id=tokenizer.pad_token_id))
    tmp = folder.with_name(folder.name + ".tmp")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if folder.exists():
        folder.rmdir()
    tmp.rename(folder)
    return {"vocab": len(tokenizer), "parameters": sum(p.numel() for p in model.parameters()),
            "sentences": len(texts), "layers": layers, "hidden": hidden}
