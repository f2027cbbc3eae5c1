"""Tiny Hugging Face models for the tests, built from configs (no hub download): a WordPiece tokenizer trained here,
a 2-layer BERT, a 2-layer wav2vec2. Each is saved with ``save_pretrained`` so the library loads it through the real
``from_pretrained`` path (``model.backbone: hf:<folder>``)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

TEXT_WORDS = {
    "en": (["good", "great", "fine", "lovely"], ["bad", "awful", "poor", "boring"], ["movie", "film", "the", "really", "plot"]),
    "es": (["bueno", "genial", "bien", "precioso"], ["malo", "horrible", "pobre", "aburrido"], ["pelicula", "muy", "la", "trama", "realmente"]),
}


def toy_sentences(lang: str, n: int, seed: int) -> list[tuple[int, str]]:
    """Sentiment sentences whose words depend on the language (the domain shift) and on the label; lengths vary."""
    rng = random.Random(seed)
    positive, negative, filler = TEXT_WORDS[lang]
    rows = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(filler) for _ in range(rng.randint(1, 8))]
        words.insert(rng.randint(0, len(words)), rng.choice(positive if label == 0 else negative))
        if rng.random() < 0.5:  # a cognate both languages share: what lets a classifier transfer at all
            words.insert(rng.randint(0, len(words)), "super" if label == 0 else "terrible")
        rows.append((label, " ".join(words)))
    return rows


def write_toy_text(root: Path, name: str = "toytext", n_train: int = 96, n_test: int = 48) -> Path:
    """A two-language text dataset in the prepared layout (TSV parts + dataset.json) under ``root``."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for seed, lang in enumerate(("en", "es")):
        for split, n in (("train", n_train), ("test", n_test)):
            rows = toy_sentences(lang, n, seed * 10 + (split == "test"))
            (folder / f"{lang}_{split}.tsv").write_text(
                "label\ttext\tlanguage\n" + "".join(f"{y}\t{t}\t{lang}\n" for y, t in rows), encoding="utf-8")
            parts.append(f"{lang}_{split}")
    (folder / "dataset.json").write_text(json.dumps(
        {"kind": "text", "format": "tsv", "classes": ["positive", "negative"], "num_classes": 2, "parts": parts}))
    return folder


def train_tokenizer(texts: list[str]):
    """A word-level tokenizer whose vocabulary is learned from ``texts`` by the tokenizers library's trainer, with a
    BERT-style normaliser, pre-tokeniser and [CLS]/[SEP] template. The trainer numbers tokens in no fixed order (ties
    in its hash maps), so the learned vocabulary is renumbered sorted: the same texts always give the same ids."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=special))
    learned = sorted(t for t in tok.get_vocab() if t not in special)
    tok.model = models.WordLevel(vocab={t: i for i, t in enumerate(special + learned)}, unk_token="[UNK]")
    tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def tiny_bert(folder: Path, texts: list[str], hidden: int = 32, layers: int = 2) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = train_tokenizer(texts)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_xlmr(folder: Path, texts: list[str], hidden: int = 32, layers: int = 2) -> Path:
    """An XLM-R-style encoder (``XLMRobertaModel``: RoBERTa embeddings with padding-offset positions) from a config."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    tokenizer = train_tokenizer(texts)
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                              num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=80,
                              pad_token_id=tokenizer.pad_token_id, type_vocab_size=1)
    XLMRobertaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_wav2vec2(folder: Path, hidden: int = 32) -> Path:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=2 * hidden,
        conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 8, 8), num_feat_extract_layers=3,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
        do_stable_layer_norm=True, vocab_size=32)
    Wav2Vec2Model(config).save_pretrained(folder)
    return folder


def write_toy_audio(root: Path, name: str = "toyaudio", n: int = 48, rate: int = 8000) -> Path:
    """Two classes of synthesised 'utterances' of varying length: low vs high tones with noise, int16."""
    rng = np.random.default_rng(0)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n), ("test", n // 2)):
        clips, labels = [], []
        for i in range(count):
            label = i % 2
            length = int(rng.integers(rate // 4, rate // 2))
            t = np.arange(length) / rate
            freq = (300 if label == 0 else 1500) * rng.uniform(0.9, 1.1)
            wave = 0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(length)
            clips.append((wave * 32767).astype(np.int16))
            labels.append(label)
        lengths = np.array([len(c) for c in clips], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        np.savez_compressed(folder / f"{split}.npz", audio=np.concatenate(clips), offsets=offsets, lengths=lengths,
                            sample_rate=np.int64(rate), y=np.array(labels, dtype=np.int64),
                            speaker=np.array([f"s{i % 3}" for i in range(count)]))
    (folder / "dataset.json").write_text(json.dumps(
        {"kind": "audio", "format": "audio", "classes": ["low", "high"], "num_classes": 2, "parts": ["train", "test"]}))
    return folder
