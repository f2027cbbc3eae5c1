"""Text and audio training throughput (GitHub issue #14, "Evidence to commit"): the library's engine next to the
same model and data under Hugging Face ``transformers.Trainer`` and under a plain PyTorch loop, in one run.

Models (built here from configs, random weights, saved with ``save_pretrained`` into a temporary folder that every
measurement loads with ``from_pretrained``; nothing is downloaded):

    text    BERT, 4 layers x 256 hidden, 4 heads, intermediate 1024, with a WordPiece tokenizer trained here (the
            ``tokenizers`` library) on the OpeNER en_train + es_train sentences and saved with
            ``PreTrainedTokenizerFast.save_pretrained`` next to the model (the approach of tests/hf_tiny.py)
    audio   wav2vec2, 4 layers x 256 hidden, 4 heads, intermediate 1024, a 4-layer convolutional feature encoder
            (128 channels, strides 5-2-2-2: 200 frames/s at 8 kHz), layer norm, layerdrop 0 (every step runs all
            layers, so windows are comparable)

Data: the real OpeNER sentences (``opener_sentiment`` en_train -> es_train, 5 classes) and FSDD (``fsdd`` train,
8 kHz, 10 digits), loaded and prepared by the library (tokenised once; audio normalised per utterance and cut to
``--audio-max-seconds``). The references take the same prepared data (``transferlab.experiment.load_domain`` +
``make_modality(...).prepare``) and pad each batch to its longest sample the same way (``dataset.batch``).

Cases (``--cases``)
    text_dann, text_source_only   the engine (``experiment.build`` + ``Experiment.trainer``), DANN en->es and
                                  source only; each with ``data.bucket_by_length`` on (its default) and off (``--bucket``)
    text_hf_trainer               ``transformers.Trainer``, source only (classification head on mean-pooled states,
                                  cross-entropy), same batches as the engine without bucketing
    text_plain_loop               a plain PyTorch loop, same model, loss, batches and optimizer
    audio_source_only             the engine, source only on fsdd/train (bucketing on and off)
    audio_hf_trainer, audio_plain_loop   as for text, on fsdd/train
    audio_dann                    the engine's DANN across speakers: FSDD train, speakers george/jackson/lucas ->
                                  nicolas/theo/yweweler, written as a user dataset (dataset.json) into the temporary
                                  folder (not measured by default; add it to --cases)

Every measurement: batch ``--batch-size`` (per domain), AdamW (lr 1e-4, weight decay 0, constant lr), dropout as the
configs give it, the same precision (``bf16``: autocast to bfloat16 with fp32 weights in all three). The engine's
DANN trains source + target samples each step (2 x batch), source only and the references train the source batch;
``samples_per_s`` counts the samples trained per second, so DANN's figure includes its target samples (the record's
``samples_per_step`` says which).

Timing and memory as in run.py: ``--warmup`` steps, then ``--steps`` timed steps in ``--windows`` windows
(common.timed_windows; the engine advances by ``trainer.fit(stop_at=k)``, the plain loop by its own steps, the HF
Trainer in one ``train()`` call whose window boundaries a ``TrainerCallback`` reads at ``on_step_end``). Peak
memory: run.py's method (CUDA ``max_memory_allocated``; CPU peak RSS above the RSS just before the trainer/optimizer
is created, model and data excluded). Every measurement runs in its own Python process.

With ``--case-seconds S`` the warm-up steps after the first are timed together, and the timed steps are sized to
take about S seconds (at most ``--steps``, at least one per window), so a whole run has a predictable length on any
machine; each record gives its ``window_steps``, ``timed_steps`` and the ``warmup_step_s`` that sized them.

Results are merged into ``--out`` (records of the same case/precision/device replaced, all others kept) and
``results.md`` is rewritten by run.py's generator, which appends this script's table.

    python benchmarks/speed/modalities.py --device cpu --precision fp32 bf16 --batch-size 32 \\
        --warmup 3 --steps 300 --windows 5 --case-seconds 15
    python benchmarks/speed/modalities.py --steps 3 --warmup 2 --windows 3 --out /tmp/smoke.json   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from common import this_command, timed_windows, today  # noqa: E402

ENGINE = {  # case -> (modality, method)
    "text_dann": ("text", "dann"),
    "text_source_only": ("text", "source_only"),
    "audio_source_only": ("audio", "source_only"),
    "audio_dann": ("audio", "dann"),
}
REFERENCES = {  # case -> (modality, method label)
    "text_hf_trainer": ("text", "hf_trainer"),
    "text_plain_loop": ("text", "plain_loop"),
    "audio_hf_trainer": ("audio", "hf_trainer"),
    "audio_plain_loop": ("audio", "plain_loop"),
}
CASES = list(ENGINE) + list(REFERENCES)
DEFAULT_CASES = [c for c in CASES if c != "audio_dann"]
TASKS = {"text": "text:opener_en->es", "audio": "audio:fsdd_train", "audio_dann": "audio:fsdd_speakers_gjl->nty"}
SPEAKERS = (("george", "jackson", "lucas"), ("nicolas", "theo", "yweweler"))
SPEAKER_SET = "fsdd_speakers"
LR = 1e-4
DIGEST_BATCHES = 5
TEXT_MAX_LENGTH = 128
DESCRIPTIONS = {
    "text": "BERT 4x256 (4 heads, ffn 1024) from a config, WordPiece tokenizer trained on OpeNER en+es train, "
            "mean pooling + linear head",
    "audio": "wav2vec2 4x256 (4 heads, ffn 1024, conv encoder 4x128 ch, stride 40, layerdrop 0) from a config, "
             "mean pooling + linear head",
}


# ------------------------------------------------------------------------------------------------
# models and data, built once by the driver into a temporary folder
# ------------------------------------------------------------------------------------------------


def build_text_model(folder: Path, data_root: str | None, vocab_size: int) -> dict:
    import torch
    from transformers import BertConfig, BertModel

    from transferlab.data import load
    from transferlab.models.encoders import train_wordpiece

    texts = [t for part in ("en_train", "es_train") for t in load("opener_sentiment", part, data_root).texts]
    tokenizer = train_wordpiece(texts, vocab_size)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, pad_token_id=tokenizer.pad_token_id)
    model = BertModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"vocab": len(tokenizer), "parameters": sum(p.numel() for p in model.parameters()),
            "tokenizer_sentences": len(texts)}


def build_audio_model(folder: Path) -> dict:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
        conv_dim=(128, 128, 128, 128), conv_kernel=(10, 3, 3, 2), conv_stride=(5, 2, 2, 2), num_feat_extract_layers=4,
        conv_bias=False, feat_extract_norm="layer", do_stable_layer_norm=True, num_conv_pos_embeddings=32,
        num_conv_pos_embedding_groups=4, layerdrop=0.0, vocab_size=32)
    model = Wav2Vec2Model(config)
    model.save_pretrained(folder)
    return {"parameters": sum(p.numel() for p in model.parameters())}


def write_speaker_split(root: Path, data_root: str | None) -> None:
    """FSDD train as a user dataset with two parts by speaker (``a``: SPEAKERS[0], ``b``: SPEAKERS[1])."""
    import numpy as np

    from transferlab.data import data_root as resolve_root

    folder = root / SPEAKER_SET
    folder.mkdir(parents=True, exist_ok=True)
    with np.load(resolve_root(data_root) / "fsdd" / "train.npz") as z:
        arrays = {k: z[k] for k in z.files}
    for part, speakers in zip(("a", "b"), SPEAKERS):
        rows = np.flatnonzero(np.isin(arrays["speaker"], speakers))
        clips = [arrays["audio"][arrays["offsets"][i]:arrays["offsets"][i] + arrays["lengths"][i]] for i in rows]
        lengths = arrays["lengths"][rows].astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        np.savez(folder / f"{part}.npz", audio=np.concatenate(clips), offsets=offsets, lengths=lengths,
                 sample_rate=np.int64(arrays["sample_rate"]), y=arrays["y"][rows], speaker=arrays["speaker"][rows])
    (folder / "dataset.json").write_text(json.dumps({
        "kind": "audio", "format": "audio", "num_classes": 10, "classes": [str(d) for d in range(10)],
        "parts": ["a", "b"]}))


# ------------------------------------------------------------------------------------------------
# worker: one measurement in this process
# ------------------------------------------------------------------------------------------------


def engine_config(spec: dict, method: str | None = None, bucket: bool | None = None):
    """The engine's config for this case (the references load their data through it too)."""
    from transferlab.experiment import load_config

    modality = spec["modality"]
    method = method or spec["method"]
    data: dict = {"batch_size": spec["batch_size"], "eval_batch_size": 128,
                  "bucket_by_length": spec["bucket"] if bucket is None else bucket}
    if modality == "text":
        data.update(source={"name": "opener_sentiment", "part": "en_train"},
                    target={"name": "opener_sentiment", "part": "es_train"},
                    text={"max_length": TEXT_MAX_LENGTH})
        folder = spec["text_model"]
    else:
        data["audio"] = {"sample_rate": 8000, "max_seconds": spec["audio_max_seconds"]}
        if spec["case"] == "audio_dann":
            data.update(root=spec["speaker_root"], source={"name": SPEAKER_SET, "part": "a"},
                        target={"name": SPEAKER_SET, "part": "b"})
        else:
            data["source"] = {"name": "fsdd", "part": "train"}
        folder = spec["audio_model"]
    raw = {
        "seed": 0,
        "data": data,
        "model": {"backbone": f"hf:{folder}", "hf": {"pooling": "mean"}, "bottleneck_dim": 0},
        "method": {"name": method},
        "optim": {"name": "adamw", "lr": LR, "weight_decay": 0.0, "lr_schedule": "constant"},
        "train": {"iterations": 1_000_000, "eval_every": 0, "checkpoint_every": 0, "precision": spec["precision"],
                  "device": spec["device"]},
    }
    return load_config(raw=raw)


def _device(spec: dict):
    import torch

    cuda = spec["device"] == "cuda" or (spec["device"] == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if cuda else "cpu")


def _start_memory(device) -> tuple[float, str]:
    import torch

    from run import _reset_cpu_peak

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return 0.0, "torch.cuda.max_memory_allocated (model, optimizer state and training data on the GPU included)"
    return _reset_cpu_peak()


def _peak_memory(device, baseline_mb: float, method: str) -> tuple[float, float]:
    import torch

    from run import _cpu_peak_mb

    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        return peak, peak
    total = _cpu_peak_mb(method)
    return total - baseline_mb, total


def _padding(dataset, batches) -> dict:
    """Mean padded length of the batches and the fraction of their positions that are padding."""
    longest = [int(dataset.lengths[index].max()) for index in batches]
    real = sum(int(dataset.lengths[index].sum()) for index in batches)
    padded = sum(n * len(index) for n, index in zip(longest, batches))
    return {"padded_len_mean": statistics.fmean(longest), "pad_fraction": 1.0 - real / max(1, padded)}


def SampleStreamState(dataset, batch_size: int, seed: int, bucket: bool, n: int) -> dict:
    """(epoch, position) of a fresh SampleStream with these settings after ``n`` batches."""
    from transferlab.data.streams import SampleStream

    stream = SampleStream(dataset, batch_size, seed=seed, bucket=bucket)
    for _ in range(n):
        if stream.position == len(stream._batches):
            stream.epoch, stream.position = stream.epoch + 1, 0
            stream._batches = stream._epoch_batches(stream.epoch)
        stream.position += 1
    return {"epoch": stream.epoch, "position": stream.position}


def _stream_batches(dataset, batch_size: int, seed: int, bucket: bool, n: int) -> list:
    """The index lists of the first ``n`` batches a SampleStream with these settings draws (the engine's order)."""
    from transferlab.data.streams import SampleStream

    stream = SampleStream(dataset, batch_size, seed=seed, bucket=bucket)
    out = []
    for _ in range(n):
        if stream.position == len(stream._batches):
            stream.epoch, stream.position = stream.epoch + 1, 0
            stream._batches = stream._epoch_batches(stream.epoch)
        out.append(stream._batches[stream.position])
        stream.position += 1
    return out


def _window_sizes(steps: int, windows: int) -> list[int]:
    windows = max(1, min(windows, steps))  # as common.timed_windows splits them
    return [round(steps * (i + 1) / windows) - round(steps * i / windows) for i in range(windows)]


def _timed_steps(spec: dict, step_s: float) -> int:
    """The timed steps of a measurement: ``--steps``, or with ``--case-seconds`` about that many seconds' worth
    (``step_s``: the mean time of the warm-up steps after the first), at most ``--steps`` and at least one per
    window."""
    if not spec.get("case_seconds"):
        return spec["steps"]
    return max(spec["windows"], min(spec["steps"], round(spec["case_seconds"] / max(step_s, 1e-9))))


def calibrated_windows(advance, spec: dict, sync, per_step: int) -> dict:
    """common.timed_windows after ``spec["warmup"]`` warm-up steps; with ``--case-seconds`` the warm-up steps
    after the first are timed together to size the timed steps (:func:`_timed_steps`). ``warmup_s`` covers all
    warm-up steps."""
    if not spec.get("case_seconds"):
        return timed_windows(advance, spec["warmup"], spec["steps"], spec["windows"], sync, per_step)
    started = time.perf_counter()
    advance(1)
    sync()
    t1 = time.perf_counter()
    advance(spec["warmup"] - 1)
    sync()
    warmup_s = time.perf_counter() - started
    step_s = (time.perf_counter() - t1) / (spec["warmup"] - 1)
    timing = timed_windows(advance, 0, _timed_steps(spec, step_s), spec["windows"], sync, per_step)
    return {**timing, "warmup_s": warmup_s, "warmup_step_s": step_s}


def _digest(batches) -> str:
    """A short fingerprint of the first DIGEST_BATCHES index batches (equal digests: the same batches in the same
    order), comparable between measurements that trained different numbers of steps."""
    import hashlib

    return hashlib.sha1(json.dumps([[int(i) for i in b] for b in batches[:DIGEST_BATCHES]]).encode()).hexdigest()[:12]


def engine_worker(spec: dict) -> dict:
    import torch

    from transferlab.engine import device_description
    from transferlab.experiment import build

    config = engine_config(spec)
    experiment = build(config, config.data.root)
    device = _device(spec)
    baseline_mb, mem_method = _start_memory(device)
    trainer = experiment.trainer(None, progress=False)

    def sync() -> None:
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)

    per_step = spec["batch_size"] * (2 if spec["method"] == "dann" else 1)
    timing = calibrated_windows(lambda n: trainer.fit(stop_at=trainer.step + n), spec, sync, per_step)
    peak_mb, peak_total_mb = _peak_memory(trainer.device, baseline_mb, mem_method)
    n = trainer.step
    source = _stream_batches(experiment.source, spec["batch_size"], 0, spec["bucket"], n)
    replay = SampleStreamState(experiment.source, spec["batch_size"], 0, spec["bucket"], n)
    if replay != {k: trainer.streams["source"].state_dict()[k] for k in ("epoch", "position")}:
        raise RuntimeError(f"the replayed source batches ({replay}) are not the ones the engine drew "
                           f"({trainer.streams['source'].state_dict()}): the padding figures would be wrong")
    padding = _padding(experiment.source, source)
    if spec["method"] == "dann":  # one forward over source + target, padded to the longer of the two batches
        target = _stream_batches(experiment.target, spec["batch_size"], 1, spec["bucket"], n)
        joint = [max(int(experiment.source.lengths[s].max()), int(experiment.target.lengths[t].max()))
                 for s, t in zip(source, target)]
        real = sum(int(experiment.source.lengths[s].sum()) + int(experiment.target.lengths[t].sum())
                   for s, t in zip(source, target))
        padding = {"padded_len_mean": statistics.fmean(joint),
                   "pad_fraction": 1.0 - real / (2 * spec["batch_size"] * sum(joint))}
    padding["source_batches_digest"] = _digest(source)
    return {**timing, **padding, "peak_mem_mb": peak_mb, "peak_mem_total_mb": peak_total_mb, "mem_method": mem_method,
            "device": device_description(trainer.device), "device_type": trainer.device.type,
            "samples_per_step": per_step, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": _transformers_version(), "final_step": trainer.step,
            "train_samples": len(experiment.source)}


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _classifier(folder: str, num_classes: int):
    """The reference model: the saved Hugging Face model, states mean-pooled under the attention mask (audio: the
    mask mapped to the model's frame rate), a linear head, cross-entropy on fp32 logits -- what the engine's
    ``hf:`` backbone + source-only head compute."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from transformers import AutoModel

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = AutoModel.from_pretrained(folder)
            self.head = nn.Linear(self.model.config.hidden_size, num_classes)

        def forward(self, input_ids=None, input_values=None, attention_mask=None, labels=None):
            if input_ids is not None:
                hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                mask = attention_mask
            else:
                hidden = self.model(input_values=input_values, attention_mask=attention_mask).last_hidden_state
                mask = self.model._get_feature_vector_attention_mask(hidden.shape[1], attention_mask)
            weights = mask.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
            logits = self.head(pooled)
            out = {"logits": logits}
            if labels is not None:
                out["loss"] = F.cross_entropy(logits.float(), labels)
            return out

    torch.manual_seed(0)
    return Classifier()


def reference_worker(spec: dict) -> dict:
    import torch

    from transferlab.data.streams import epoch_permutation
    from transferlab.engine import device_description
    from transferlab.experiment import load_domain, make_modality

    device = _device(spec)
    config = engine_config(spec, method="source_only", bucket=False)
    raw = load_domain(config.data.source, config.data.root, config.seed)
    modality = make_modality(config, spec["modality"], [raw])
    dataset = modality.prepare(raw)  # the engine's prepared data: token ids / normalised, cut waveforms
    batch, seed = spec["batch_size"], 0  # the engine's source stream seed: seed * 2 + 0
    usable = len(dataset) // batch * batch
    model = _classifier(config.model.backbone.split(":", 1)[1], dataset.num_classes).to(device)
    model.train()
    bf16 = spec["precision"] == "bf16"

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    seen: list[list[int]] = []  # the index batches actually collated, in order

    def collate(indices) -> dict:
        seen.append([int(i) for i in indices])
        index = torch.as_tensor(indices, dtype=torch.long)
        inputs = dataset.batch(index)  # padded to the batch's longest sample, with attention_mask
        inputs["labels"] = dataset.y[index]
        return inputs

    baseline_mb, mem_method = _start_memory(device)
    if spec["method"] == "plain_loop":
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.0,
                                      **({"fused": True} if device.type == "cuda" else {}))
        state = {"epoch": 0, "position": 0, "order": epoch_permutation(len(dataset), seed, 0), "step": 0}
        running = torch.zeros((), device=device)

        def next_batch() -> dict:
            if state["position"] == usable // batch:
                state["epoch"] += 1
                state["position"] = 0
                state["order"] = epoch_permutation(len(dataset), seed, state["epoch"])
            index = state["order"][state["position"] * batch:(state["position"] + 1) * batch]
            state["position"] += 1
            return {k: v.to(device, non_blocking=True) for k, v in collate(index).items()}

        def advance(n: int) -> None:
            nonlocal running
            for _ in range(n):
                inputs = next_batch()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = model(**inputs)["loss"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running += loss.detach()
                state["step"] += 1
                if state["step"] % 100 == 0:  # the engine reads its losses back every log_every=100 steps
                    running.item()
                    running.zero_()

        timing = calibrated_windows(advance, spec, sync, batch)
        extra = {"final_step": state["step"]}
    else:
        timing, extra = _hf_trainer(spec, model, dataset, collate, usable, seed, device, sync)
    peak_mb, peak_total_mb = _peak_memory(device, baseline_mb, mem_method)
    trained = seen[:extra["final_step"]]  # the HF Trainer's loader may have collated one batch ahead
    if trained != [b.tolist() for b in _stream_batches(dataset, batch, seed, False, len(trained))]:
        raise RuntimeError("the reference did not train on the engine's unbucketed batches")
    padding = {**_padding(dataset, [torch.as_tensor(b) for b in trained]), "source_batches_digest": _digest(trained)}
    return {**timing, **padding, **extra, "peak_mem_mb": peak_mb, "peak_mem_total_mb": peak_total_mb,
            "mem_method": mem_method, "device": device_description(device), "device_type": device.type,
            "samples_per_step": batch, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": _transformers_version(), "train_samples": len(dataset)}


def _hf_trainer(spec: dict, model, dataset, collate, usable: int, seed: int, device, sync) -> tuple[dict, dict]:
    """``transformers.Trainer`` on the same batches; window times read by a callback at ``on_step_end``."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from transferlab.data.streams import epoch_permutation

    class Indices(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(dataset)

        def __getitem__(self, i: int) -> int:
            return i

    class EpochOrder(torch.utils.data.Sampler):
        """The engine's unbucketed order: epoch e visits epoch_permutation(n, seed, e), cut to full batches."""

        def __init__(self) -> None:
            self.epoch = 0

        def __iter__(self):
            order = epoch_permutation(len(dataset), seed, self.epoch)[:usable]
            self.epoch += 1
            return iter(order.tolist())

        def __len__(self) -> int:
            return usable

    class SameBatches(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            return EpochOrder()

    warmup = spec["warmup"]
    plan: dict = {"sizes": None, "marks": set()}
    times: dict[int, float] = {}

    def set_plan(steps: int) -> None:
        plan["sizes"] = _window_sizes(steps, spec["windows"])
        plan["marks"] = {warmup + sum(plan["sizes"][:i]) for i in range(len(plan["sizes"]) + 1)}

    if not spec.get("case_seconds"):
        set_plan(spec["steps"])

    class Clock(TrainerCallback):
        """Reads the clock at the window boundaries; with --case-seconds it times warm-up steps 2..W, sizes the
        timed steps from their mean and stops the Trainer after the last window."""

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if plan["sizes"] is None and step in (1, warmup):
                sync()
                times[step] = time.perf_counter()
                if step == warmup:
                    times["warmup_step_s"] = (times[warmup] - times[1]) / (warmup - 1)
                    set_plan(_timed_steps(spec, times["warmup_step_s"]))
            elif step in plan["marks"]:
                sync()
                times[step] = time.perf_counter()
            if plan["marks"] and step >= max(plan["marks"]):
                control.should_training_stop = True

    out_dir = tempfile.mkdtemp(prefix="hf_trainer_")  # nothing is saved there (save_strategy="no"); removed below
    args = TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=spec["batch_size"], max_steps=warmup + spec["steps"],
        learning_rate=LR, weight_decay=0.0, lr_scheduler_type="constant", warmup_steps=0, optim="adamw_torch_fused"
        if device.type == "cuda" else "adamw_torch", max_grad_norm=0.0, bf16=spec["precision"] == "bf16",
        use_cpu=device.type == "cpu", seed=0, dataloader_drop_last=True, dataloader_num_workers=0,
        dataloader_pin_memory=device.type == "cuda", remove_unused_columns=False, report_to="none",
        logging_strategy="no", save_strategy="no", eval_strategy="no", disable_tqdm=True)
    started = time.perf_counter()
    trainer = SameBatches(model=model, args=args, train_dataset=Indices(), data_collator=collate,
                          callbacks=[Clock()])
    if warmup == 0:
        times[0] = time.perf_counter()
    try:
        trainer.train()
    finally:
        import shutil

        shutil.rmtree(out_dir, ignore_errors=True)
    sizes = plan["sizes"]
    points = [times[m] for m in sorted(plan["marks"])]
    spans = [b - a for a, b in zip(points, points[1:])]
    timing = {"warmup_s": points[0] - started, "step_ms": [1000 * t / n for t, n in zip(spans, sizes)],
              "imgs_per_s": [spec["batch_size"] * n / t for t, n in zip(spans, sizes)], "window_steps": sizes}
    if "warmup_step_s" in times:
        timing["warmup_step_s"] = times["warmup_step_s"]
    optimizer = trainer.optimizer
    optimizer = getattr(optimizer, "optimizer", optimizer)
    return timing, {"final_step": trainer.state.global_step, "hf_optimizer": type(optimizer).__name__,
                    "hf_mixed_precision": str(trainer.accelerator.mixed_precision)}


def worker(spec: dict) -> dict:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if spec["case"] in REFERENCES:
        return reference_worker(spec)
    return engine_worker(spec)


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------


def _run_worker(spec: dict, timeout: float, env: dict) -> tuple[dict | None, str | None]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout,
                              env=env)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s (warm-up included)"
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):]), None
    tail = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
    reason = next((ln for ln in reversed(tail) if "Error" in ln or "error" in ln), tail[-1] if tail else "no output")
    return None, f"exit {proc.returncode}: {reason.strip()[:400]}"


def _case_name(spec: dict) -> str:
    if spec["case"] in ENGINE:
        return f"{spec['case']}_{'bucketed' if spec['bucket'] else 'unbucketed'}"
    return spec["case"]


def _implementation(case: str) -> str:
    if case in ENGINE:
        return "transferlab engine"
    return "transformers.Trainer" if case.endswith("hf_trainer") else "plain PyTorch loop"


def _record(spec: dict, result: dict | None, error: str | None, command: str, note: str, load_1m: float | None,
            device_type: str, models: dict) -> dict:
    import torch

    modality = spec["modality"]
    method = spec["method"]
    notes = [f"{_implementation(spec['case'])}", DESCRIPTIONS[modality]]
    if spec["case"] in ENGINE:
        notes.append(f"data.bucket_by_length={'true (the default)' if spec['bucket'] else 'false'}")
    else:
        notes.append("source only; the engine's unbucketed batches (its epoch permutations, padded per batch; the "
                     "worker checks that the index batches trained equal the engine's, see source_batches_digest)")
    if spec["case"] == "text_hf_trainer" or spec["case"] == "audio_hf_trainer":
        notes.append("max_grad_norm=0 (no clipping, as the engine; the Trainer still computes the grad norm each "
                     "step), logging/saving/eval off, dataloader_num_workers=0")
    per_step = spec["batch_size"] * (2 if method == "dann" else 1)
    notes.append(f"samples/s = {'(source + target)' if method == 'dann' else 'source'} samples trained per second "
                 f"({per_step} per step)")
    if modality == "text":
        notes.append(f"OpeNER en_train ({'-> es_train' if method == 'dann' else 'only'}), max_length {TEXT_MAX_LENGTH}")
    else:
        what = ("FSDD train speakers george/jackson/lucas -> nicolas/theo/yweweler" if spec["case"] == "audio_dann"
                else "FSDD train")
        notes.append(f"{what}, 8 kHz, cut to {spec['audio_max_seconds']} s, normalised per utterance")
    if spec["precision"] == "bf16":
        notes.append("bf16 = autocast to bfloat16, fp32 weights and optimizer")
    if result is not None:
        notes.append(f"mean padded length {result['padded_len_mean']:.0f} "
                     f"{'tokens' if modality == 'text' else 'samples'}, {100 * result['pad_fraction']:.0f}% padding")
        if device_type == "cpu":
            notes.append(f"CPU, {result['threads']} threads")
    if load_1m is not None and device_type == "cpu":
        notes.append(f"1-min load average at start {load_1m:.1f}")
    if error:
        notes.append(f"FAILED: {error}")
    if note:
        notes.append(note)
    task = TASKS["audio_dann"] if spec["case"] == "audio_dann" else TASKS[modality]
    base = {
        "task": task, "method": method, "implementation": _implementation(spec["case"]), "case": _case_name(spec),
        "modality": modality, "bucket_by_length": spec["bucket"], "stage": None, "n_seeds": 1, "overrides": [],
        "device": result["device"] if result else device_type, "device_type": device_type, "command": command,
        "date": today(), "precision": spec["precision"], "compile": "none", "batch_size": spec["batch_size"],
        "samples_per_step": per_step, "backbone": DESCRIPTIONS[modality].split(" from")[0],
        "model": models.get(modality, {}), "torch": result["torch"] if result else torch.__version__,
        "transformers": result["transformers"] if result else None, "synthetic": False,
        "warmup_steps": spec["warmup"], "timed_steps": spec["steps"],
        "window_steps": result["window_steps"] if result else None,
        "warmup_s": round(result["warmup_s"], 2) if result else None, "metric": "samples_per_s", "note": "; ".join(notes),
    }
    if result is None:
        return {**base, "mean": None, "std": None, "n_windows": 0, "peak_mem_mb": None, "error": error}
    values = result["imgs_per_s"]  # common.timed_windows' name; here samples (sentences / utterances) per second
    step_ms = result["step_ms"]
    extra = {k: result[k] for k in ("hf_optimizer", "hf_mixed_precision") if k in result}
    return {**base, "mean": round(statistics.fmean(values), 2),
            "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
            "median": round(statistics.median(values), 2), "n_windows": len(values),
            "values": [round(v, 2) for v in values], "step_ms_median": round(statistics.median(step_ms), 1),
            "step_ms": [round(v, 1) for v in step_ms], "peak_mem_mb": round(result["peak_mem_mb"], 1),
            "peak_mem_total_mb": round(result["peak_mem_total_mb"], 1), "mem_method": result["mem_method"],
            "padded_len_mean": round(result["padded_len_mean"], 1), "pad_fraction": round(result["pad_fraction"], 3),
            "source_batches_digest": result["source_batches_digest"], "train_samples": result["train_samples"],
            "case_seconds": spec.get("case_seconds"), "timed_steps": sum(result["window_steps"]),
            "warmup_step_s": round(result["warmup_step_s"], 3) if "warmup_step_s" in result else None,
            **extra}


def _key(r: dict) -> tuple:
    return (r["case"], r["precision"], r["compile"], r["device"], r["metric"], tuple(r.get("overrides") or ()))


def markdown_section(records: list[dict]) -> list[str]:
    """results.md's text-and-audio table (run.py's ``_write`` appends it; one row per samples_per_s record)."""
    rows = [r for r in records if r.get("metric") == "samples_per_s"]
    if not rows:
        return []
    out = ["", "## Text and audio (benchmarks/speed/modalities.py)", "",
           "| task | implementation | method | bucketing | device | precision | batch | samples/step | samples/s "
           "(mean ± std) | step ms (median) | peak MB | pad % | windows × steps | date |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bucket = "on" if r.get("bucket_by_length") else "off"
        windows = f"{r['n_windows']} × {r['window_steps'][0]}" if r.get("window_steps") else "—"
        if r["mean"] is None:
            cells = [r["task"], r["implementation"], r["method"], bucket, r["device"], r["precision"], r["batch_size"],
                     r["samples_per_step"], "failed", "—", "—", "—", "—", r["date"]]
        else:
            cells = [r["task"], r["implementation"], r["method"], bucket, r["device"], r["precision"], r["batch_size"],
                     r["samples_per_step"], f"{r['mean']:,.1f} ± {r['std']:,.1f}", f"{r['step_ms_median']:.1f}",
                     f"{r['peak_mem_mb']:,.0f}", f"{100 * r['pad_fraction']:.0f}", windows, r["date"]]
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    out += ["", "samples/s: samples trained per second (DANN: source + target, 2 × batch per step; source only, "
                "transformers.Trainer and the plain loop: the source batch). Pad %: padding positions of the timed "
                "runs' batches (DANN: of the joint source + target batch). Each record's note gives the details."]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES, choices=CASES)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--bucket", nargs="+", default=["on", "off"], choices=["on", "off"],
                        help="data.bucket_by_length for the engine cases (the references always use unbucketed batches)")
    parser.add_argument("--batch-size", type=int, default=32, help="per domain")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per measurement (default for both modalities)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up steps per measurement")
    parser.add_argument("--text-steps", type=int, help="timed steps for the text cases (default --steps)")
    parser.add_argument("--text-warmup", type=int, help="warm-up steps for the text cases (default --warmup)")
    parser.add_argument("--audio-steps", type=int, help="timed steps for the audio cases (default --steps)")
    parser.add_argument("--audio-warmup", type=int, help="warm-up steps for the audio cases (default --warmup)")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--case-seconds", type=float,
                        help="size each measurement's timed steps to about this many seconds, estimated from its last "
                             "warm-up step (at most the --steps of its modality, at least one per window; needs 2+ "
                             "warm-up steps); without it every measurement times exactly --steps steps")
    parser.add_argument("--audio-max-seconds", type=float, default=1.0,
                        help="data.audio.max_seconds (configs/audio/fsdd_wav2vec2_small.yaml: 1.0)")
    parser.add_argument("--vocab-size", type=int, default=8000, help="WordPiece vocabulary size to train")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--data-root", help="prepared data (opener_sentiment, fsdd); default $TRANSFERLAB_DATA")
    parser.add_argument("--case-timeout", type=float, default=600)
    parser.add_argument("--note", default="", help="free text added to every record")
    parser.add_argument("--out", default=str(HERE / "results.json"),
                        help="results file: records are merged into it (same case/precision/device replaced); "
                             "results.md next to it is rewritten by run.py's generator")
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._worker:
        result = worker(json.loads(args._worker))
        print("RESULT " + json.dumps(result), flush=True)
        return

    import torch

    from run import _write

    out = Path(args.out)
    command = this_command()
    if args.case_seconds:
        low = [k for k in ("warmup", "text_warmup", "audio_warmup") if getattr(args, k) is not None and getattr(args, k) < 2]
        if low:
            parser.error(f"--case-seconds times the warm-up steps after the first: {', '.join(low)} must be at least 2")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device_type = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    data_root = args.data_root or os.environ.get("TRANSFERLAB_DATA")
    load_1m = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    previous = json.loads(out.read_text()) if out.is_file() else []

    with tempfile.TemporaryDirectory(prefix="tl_modalities_") as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, TRANSFERLAB_CACHE=str(tmp / "cache"), TOKENIZERS_PARALLELISM="false",
                   HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        if data_root:
            env["TRANSFERLAB_DATA"] = data_root
        models: dict[str, dict] = {}
        modalities = {ENGINE.get(c, REFERENCES.get(c))[0] for c in args.cases}
        started = time.perf_counter()
        if "text" in modalities:
            models["text"] = build_text_model(tmp / "bert", data_root, args.vocab_size)
        if "audio" in modalities:
            models["audio"] = build_audio_model(tmp / "wav2vec2")
        if "audio_dann" in args.cases:
            write_speaker_split(tmp / "speakers", data_root)
        print(f"models built in {time.perf_counter() - started:.1f} s: {json.dumps(models)}", flush=True)

        plan = []
        for case in args.cases:
            modality, method = ENGINE.get(case) or REFERENCES[case]
            steps = getattr(args, f"{modality}_steps") or args.steps
            warmup = getattr(args, f"{modality}_warmup")
            warmup = args.warmup if warmup is None else warmup
            buckets = [b == "on" for b in args.bucket] if case in ENGINE else [False]
            for precision in args.precision:
                for bucket in buckets:
                    plan.append({"case": case, "modality": modality, "method": method, "bucket": bucket,
                                 "precision": precision, "device": args.device, "batch_size": args.batch_size,
                                 "steps": steps, "warmup": warmup, "windows": args.windows,
                                 "case_seconds": args.case_seconds,
                                 "audio_max_seconds": args.audio_max_seconds, "text_model": str(tmp / "bert"),
                                 "audio_model": str(tmp / "wav2vec2"), "speaker_root": str(tmp / "speakers")})
        records: list[dict] = []
        for i, spec in enumerate(plan, 1):
            label = f"{_case_name(spec)} {spec['precision']}"
            print(f"[{i}/{len(plan)}] {label}: {spec['warmup']} warm-up + {spec['steps']} timed steps, batch "
                  f"{spec['batch_size']} ...", flush=True)
            t0 = time.perf_counter()
            result, error = _run_worker(spec, args.case_timeout, env)
            wall = time.perf_counter() - t0
            if result is None:
                print(f"    FAILED ({wall:.0f} s): {error}", flush=True)
            else:
                print(f"    {statistics.median(result['step_ms']):.1f} ms/step (median), "
                      f"{statistics.fmean(result['imgs_per_s']):,.1f} samples/s, peak {result['peak_mem_mb']:.0f} MB, "
                      f"{100 * result['pad_fraction']:.0f}% padding; warm-up {result['warmup_s']:.1f} s, "
                      f"process {wall:.0f} s", flush=True)
            records.append(_record(spec, result, error, command, args.note, load_1m, device_type, models))
            fresh = {_key(r) for r in records}
            _write(out, [r for r in previous if _key(r) not in fresh], records, [])
        print(f"total {time.perf_counter() - started:.0f} s", flush=True)
    print("\n".join(markdown_section(records)))


if __name__ == "__main__":
    main()
