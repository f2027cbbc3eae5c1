"""CTC speech recognition (Graves et al., ICML 2006), as wav2vec 2.0 is fine-tuned (Baevski et al., NeurIPS 2020):
a linear layer on the encoder's per-frame states, trained with the connectionist temporal classification loss on
character transcripts; decoding takes the best character per frame, merges repeats and drops blanks (``greedy``), or
searches labellings with a beam, optionally scored by a word n-gram language model (``decode: beam``).

    loss = CTC(log_softmax(W · dropout(h_t)), characters)

Multi-task (``group_heads: [adult, child]``): one CTC head per speaker group on the shared encoder, each utterance
trained through its own group's head, plus an auxiliary speaker-type classifier on the mean of the states
(``group_loss_weight``). At test time an utterance is decoded by its known group's head (``route: known``), or by
the head of the group the classifier predicts (``route: predicted``, when the group is unknown).

The character vocabulary and the group names come from the task (``task.name: ctc``; ``experiment.build`` makes
them); the engine scores transcripts by WER and CER (``engine.metrics.edit_counts``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat
from torch import nn

from ..errors import ConfigError
from .base import METHODS, Method, MethodConfig


@dataclass
class CTCTask:
    """What a CTC method predicts: the vocabulary (``data.transcripts.CTCVocabulary``: ``len``, ``blank``, ``greedy``,
    ``decode``) and the speaker-group names (index = the ``group`` target)."""

    vocab: Any
    groups: list[str] = field(default_factory=list)


class CTCConfig(MethodConfig):
    name: Literal["ctc"] = "ctc"
    group_heads: list[str] = Field(default_factory=list)
    """One CTC head per named group (``task.group`` names each utterance's group); empty: one shared head."""
    group_loss_weight: NonNegativeFloat = 0.0
    """Weight of the auxiliary speaker-group classifier's cross-entropy (needs ``task.group``)."""
    route: Literal["predicted", "known"] = "predicted"
    """With group heads, which head decodes an evaluation utterance: its predicted group's, or its known group's."""
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """Dropout on the states before the head (wav2vec2's ``final_dropout``)."""
    decode: Literal["greedy", "beam"] = "greedy"
    """How transcripts are read from the frames: the best character per frame (``greedy``), or beam search over
    labellings (torchaudio's CTC decoder; with ``lm`` + ``lexicon``, a KenLM word n-gram language model)."""
    beam_size: int = Field(10, ge=1)
    lm: str | None = None
    """A KenLM word n-gram model (``.arpa`` or ``.bin``) for beam search; needs ``lexicon``."""
    lexicon: str | None = None
    """``word<TAB>c h a r s |`` lines: the words the language model may output, spelt in the vocabulary's characters."""
    lm_weight: float = 2.0
    word_score: float = 0.0


@METHODS.register("ctc")
class CTC(Method):
    """CTC fine-tuning: character logits per frame from the encoder's sequence output."""

    Config = CTCConfig
    inputs = {"source": True}
    task = "ctc"
    graph_capturable = False
    graph_capturable_why = "batches of speech change shape"

    def __init__(self, encoder: nn.Module, num_classes: int, *, task: CTCTask | None = None, **hparams) -> None:
        super().__init__(encoder, num_classes, **hparams)
        if task is None:
            raise ConfigError("method ctc predicts transcripts: set task.name: ctc (and task.text, the transcript column)")
        self.vocab, self.groups = task.vocab, list(task.groups)
        names = self.hparams.group_heads
        unknown = [g for g in names if g not in self.groups]
        if unknown:
            raise ConfigError(f"method.group_heads {unknown} are not groups of task.group (the data has "
                              f"{self.groups or 'no task.group'})")
        if (names or self.hparams.group_loss_weight > 0) and not self.groups:
            raise ConfigError("method.group_heads / group_loss_weight need task.group (the column naming each "
                              "utterance's speaker group)")
        dim = encoder.backbone.out_features
        self.dropout = nn.Dropout(self.hparams.dropout)
        self.heads = nn.ModuleList(nn.Linear(dim, len(self.vocab)) for _ in range(max(1, len(names))))
        self.group_head = nn.Linear(dim, len(self.groups)) if (names or self.hparams.group_loss_weight > 0) else None
        # group index (task order) -> head index; groups without a head of their own use head 0
        head_of = [names.index(g) if g in names else 0 for g in self.groups]
        self.register_buffer("head_of_group", torch.tensor(head_of or [0], dtype=torch.long), persistent=False)

    # --- the model --------------------------------------------------------------------------------
    def states(self, x) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-frame states ``(B, T, D)``, frame lengths ``(B,)`` and the states' mean per utterance ``(B, D)``."""
        hidden, mask = self.encoder.sequence(x)
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        return hidden, mask.sum(1), (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def head_logits(self, hidden: torch.Tensor, group: torch.Tensor | None = None) -> torch.Tensor:
        """Character logits ``(B, T, V)``: each row through its group's head (head 0 without groups)."""
        hidden = self.dropout(hidden)
        if len(self.heads) == 1 or group is None:
            return self.heads[0](hidden)
        every = torch.stack([h(hidden) for h in self.heads], dim=1)  # (B, H, T, V): heads are small next to the encoder
        return every[torch.arange(len(group), device=group.device), self.head_of_group[group]]

    def update(self, source, ctx):
        targets = source.targets
        group = targets.get("group")
        hidden, lengths, pooled = self.states(source.x)
        logits = self.head_logits(hidden, group)
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, V), the layout ctc_loss takes
        loss = F.ctc_loss(log_probs, targets["labels"], lengths, targets["labels_lengths"], blank=self.vocab.blank,
                          reduction="mean", zero_infinity=True)
        out = {"ctc_loss": loss.detach()}
        if self.group_head is not None and self.hparams.group_loss_weight > 0:
            group_loss = F.cross_entropy(self.group_head(pooled).float(), group)
            loss = loss + self.hparams.group_loss_weight * group_loss
            out["group_loss"] = group_loss.detach()
        ctx.backward_and_step(loss, "main")
        return out

    @torch.no_grad()
    def transcribe(self, x, group: torch.Tensor | None = None) -> tuple[list[str], torch.Tensor | None]:
        """Greedy transcripts of a batch, and the predicted group per utterance (``None`` without a group classifier).
        With group heads, each utterance is decoded by the head of its known ``group`` under ``route: known``, else
        by its predicted group's."""
        hidden, lengths, pooled = self.states(x)
        predicted = self.group_head(pooled).argmax(1) if self.group_head is not None else None
        route = group if (self.hparams.route == "known" and group is not None) else predicted
        log_probs = self.head_logits(hidden, route).float().log_softmax(-1)
        h = self.hparams
        if h.decode == "beam":
            return self.vocab.beam_search(log_probs, lengths, beam_size=h.beam_size, lm=h.lm, lexicon=h.lexicon,
                                          lm_weight=h.lm_weight, word_score=h.word_score), predicted
        return self.vocab.greedy(log_probs, lengths), predicted

    def predict(self, x):
        """Speaker-group logits (the auxiliary classifier); the transcripts come from :meth:`transcribe`."""
        if self.group_head is None:
            raise ConfigError("this CTC model has no group classifier; its output is transcripts (WER/CER)")
        return self.group_head(self.states(x)[2])

    @classmethod
    def classifies(cls) -> bool:
        return True
