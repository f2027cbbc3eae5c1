"""Per-parameter learning rates: ``model.backbone_lr_scale`` and layer-wise decay (``model.layer_lr_decay``) reach the
optimizer through ``Encoder.lr_scales``, for convolutional and Hugging Face backbones alike."""

import pytest
import torch

from transferlab.errors import ConfigError
from transferlab.experiment import build
from transferlab.models.encoders import HFEncoder
from transferlab.models.heads import Encoder
from transferlab.models.layers import lr_stages

from conftest import tiny_config
from hf_tiny import tiny_bert, tiny_wav2vec2, toy_sentences


def lr_of(optimizer: torch.optim.Optimizer) -> dict[int, float]:
    return {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}


def test_layer_decay_scales_each_backbone_layer_and_leaves_the_rest_at_the_base_lr():
    config = tiny_config("dann", model={"backbone_lr_scale": 0.1, "layer_lr_decay": 0.5}, optim={"lr": 0.02})
    experiment = build(config)
    trainer = experiment.trainer(None, progress=False)
    lr = lr_of(trainer.optimizers["main"])
    method = experiment.method
    stages = lr_stages(method.encoder.backbone)
    assert len(stages) >= 3, "LeNet has several weight layers"
    for i, stage in enumerate(stages):
        for p in stage:
            assert lr[id(p)] == pytest.approx(0.02 * 0.1 * 0.5 ** (len(stages) - 1 - i))
    backbone = {id(p) for p in method.encoder.backbone.parameters()}
    others = [p for p in method.parameters() if id(p) not in backbone]
    assert others and all(lr[id(p)] == pytest.approx(0.02) for p in others), "bottleneck, head, discriminator: base lr"


def test_without_decay_the_whole_backbone_gets_backbone_lr_scale():
    experiment = build(tiny_config("source_only", model={"backbone_lr_scale": 0.25}, optim={"lr": 0.04}))
    lr = lr_of(experiment.trainer(None, progress=False).optimizers["main"])
    assert all(lr[id(p)] == pytest.approx(0.01) for p in experiment.method.encoder.backbone.parameters())
    assert lr[id(next(experiment.method.encoder.bottleneck.parameters()))] == pytest.approx(0.04)


def test_layer_decay_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="layer_lr_decay"):
        tiny_config("dann", model={"layer_lr_decay": 1.5})


def test_hf_text_stages_are_embeddings_then_one_per_transformer_layer(tmp_path):
    from transformers import AutoModel

    folder = tiny_bert(tmp_path / "bert", [t for _, t in toy_sentences("en", 40, 0)], layers=3)
    encoder = HFEncoder(AutoModel.from_pretrained(folder))
    stages = encoder.lr_stages()
    assert len(stages) == 4
    ids = [{id(p) for p in stage} for stage in stages]
    assert {id(p) for p in encoder.model.embeddings.parameters()} <= ids[0]
    for k, layer in enumerate(encoder.layers()):
        assert {id(p) for p in layer.parameters()} == ids[k + 1] - {id(p) for p in encoder.model.pooler.parameters()}
    every = [id(p) for stage in stages for p in stage]
    assert sorted(every) == sorted(id(p) for p in encoder.model.parameters()), "each parameter in exactly one stage"
    scales = Encoder(encoder).lr_scales(1.0, 0.8)
    emb = encoder.model.embeddings.word_embeddings.weight
    last = next(encoder.layers()[-1].parameters())
    assert scales[id(emb)] == pytest.approx(0.8 ** 3) and scales[id(last)] == pytest.approx(1.0)


def test_hf_audio_stages_put_the_waveform_encoder_first_and_a_final_norm_last(tmp_path):
    from transformers import AutoModel

    encoder = HFEncoder(AutoModel.from_pretrained(tiny_wav2vec2(tmp_path / "w2v")))
    stages = encoder.lr_stages()
    first, last = {id(p) for p in stages[0]}, {id(p) for p in stages[-1]}
    assert {id(p) for p in encoder.model.feature_extractor.parameters()} <= first
    assert {id(p) for p in encoder.model.encoder.layer_norm.parameters()} <= last  # stable layer norm: after layers
    assert sum(len(s) for s in stages) == len(list(encoder.model.parameters()))
