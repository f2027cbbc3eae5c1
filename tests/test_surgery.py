"""Model surgery by stage (models/surgery.py, model.freeze / init_stages / unfreeze / stage_lr / input_conv) and
multi-hop chains (chain.py, ``transferlab chain``)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config
from torch import nn

from transferlab.errors import ConfigError
from transferlab.experiment import build, train
from transferlab.models import Encoder, create_backbone
from transferlab.models.surgery import adapt_conv_weight, resolve, set_input_channels, stages

RESNET = {"backbone": "torchvision:resnet18", "bottleneck_dim": 16}


def resnet_config(iterations: int = 6, channels: int = 1, **model):
    return tiny_config("source_only", iterations, model={**RESNET, **model},
                       data={"channels": channels, "image_size": 16})


def test_stages_of_a_torchvision_resnet_name_its_blocks_with_bn1_inside_conv1():
    encoder = Encoder(create_backbone("torchvision:resnet18", in_channels=3), 16)
    table = stages(encoder)
    assert list(table) == ["conv1", "layer1", "layer2", "layer3", "layer4", "bottleneck"]
    assert table["conv1"] == ["backbone.model.conv1", "backbone.model.bn1"]
    assert resolve(encoder, 2, "model.freeze") == ["conv1", "layer1"]
    with pytest.raises(ConfigError, match="layer1, layer2"):  # the error lists the valid stages
        resolve(encoder, ["layer9"], "model.freeze")


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_frozen_stages_keep_weights_and_batchnorm_statistics_bitwise(tmp_path):
    experiment = build(resnet_config(freeze=["conv1", "layer1"]))
    before = _snapshot(experiment.method.encoder)
    experiment.trainer(None, progress=False).fit()
    after = experiment.method.encoder.state_dict()
    frozen = [k for k in before if k.startswith(("backbone.model.conv1", "backbone.model.bn1", "backbone.model.layer1."))]
    assert any("running_mean" in k for k in frozen)  # BatchNorm statistics are among what must not move
    for key in frozen:
        assert torch.equal(before[key], after[key]), key
    moved = [k for k in before if k.startswith("backbone.model.layer2.") and not torch.equal(before[k], after[k])]
    assert any("running_mean" in k for k in moved) and any(k.endswith("conv1.weight") for k in moved)


def test_gradual_unfreezing_releases_a_stage_at_its_step():
    experiment = build(resnet_config(iterations=4, freeze=["conv1", "layer1"], unfreeze={"layer1": 2}))
    trainer = experiment.trainer(None, progress=False)
    encoder = experiment.method.encoder
    start = _snapshot(encoder)
    trainer.fit(stop_at=2)  # steps 0 and 1: layer1 still frozen
    mid = _snapshot(encoder)
    key, stat = "backbone.model.layer1.0.conv1.weight", "backbone.model.layer1.0.bn1.running_mean"
    assert torch.equal(start[key], mid[key]) and torch.equal(start[stat], mid[stat])
    trainer.fit(stop_at=3)  # step 2 is layer1's first: it must train in it
    end = encoder.state_dict()
    assert not torch.equal(mid[key], end[key]) and not torch.equal(mid[stat], end[stat])
    assert torch.equal(start["backbone.model.conv1.weight"], end["backbone.model.conv1.weight"])  # never unfrozen


def test_unfreeze_of_a_stage_that_is_not_frozen_is_refused():
    with pytest.raises(ConfigError, match="model.freeze does not freeze"):
        build(resnet_config(freeze=["conv1"], unfreeze={"layer2": 3}))


def test_stage_lr_scales_the_named_stage_only():
    experiment = build(resnet_config(stage_lr={"layer1": 0.1}))
    trainer = experiment.trainer(None, progress=False)
    optimizer = next(iter(trainer.optimizers.values()))
    lr_of = {id(p): g["initial_lr"] for g in optimizer.param_groups for p in g["params"]}
    backbone = experiment.method.encoder.backbone.model
    base = experiment.config.optim.lr
    assert lr_of[id(backbone.layer1[0].conv1.weight)] == pytest.approx(0.1 * base)
    assert lr_of[id(backbone.layer2[0].conv1.weight)] == pytest.approx(base)


def test_init_stages_copy_exactly_the_chosen_stages(tmp_path):
    train(resnet_config(iterations=3), tmp_path / "first", progress=False)
    trained = {k.removeprefix("encoder."): v for k, v in
               __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(tmp_path / "first" / "model.safetensors")).items()
               if k.startswith("encoder.")}
    fresh = build(resnet_config(seed=1) if False else resnet_config()).method.encoder.state_dict()
    copied = build(resnet_config(encoder_init=str(tmp_path / "first"), init_stages=["conv1", "layer1"])).method.encoder.state_dict()
    for key, value in copied.items():
        chosen = key.startswith(("backbone.model.conv1", "backbone.model.bn1", "backbone.model.layer1."))
        expected = trained[key] if chosen else fresh[key]
        assert torch.equal(value, expected), key
    assert not torch.equal(trained["backbone.model.layer2.0.conv1.weight"], fresh["backbone.model.layer2.0.conv1.weight"])


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_adapted_first_convolution_treats_grey_and_its_rgb_copy_alike(mode):
    torch.manual_seed(0)
    rgb = create_backbone("torchvision:resnet18", in_channels=3).eval()
    grey = create_backbone("torchvision:resnet18", in_channels=3).eval()
    grey.load_state_dict(rgb.state_dict())
    set_input_channels(grey, 1, mode)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        expected = rgb(x.expand(-1, 3, -1, -1))
        if mode == "sum":  # the sum of the filters sees a grey pixel as the RGB net saw (v, v, v)
            assert torch.allclose(grey(x), expected, atol=1e-5)
        else:  # the mean sees it at a third of the response
            assert torch.allclose(grey(3 * x), expected, atol=1e-5)
    weight = torch.randn(4, 1, 3, 3)
    back = adapt_conv_weight(weight, 3, "sum")
    image = torch.rand(1, 1, 8, 8)
    assert torch.allclose(nn.functional.conv2d(image.expand(-1, 3, -1, -1), back), nn.functional.conv2d(image, weight),
                          atol=1e-5)  # 1 -> 3: the 3-channel copy of a grey image answers as the grey one did


def test_a_grey_run_starts_from_an_rgb_run_through_encoder_init(tmp_path):
    train(resnet_config(iterations=2, channels=3), tmp_path / "rgb", progress=False)
    rgb = build(resnet_config(channels=3, encoder_init=str(tmp_path / "rgb"))).method.encoder.eval()
    grey = build(resnet_config(channels=1, encoder_init=str(tmp_path / "rgb"))).method.encoder.eval()
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(grey(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-4)


def _chain(tmp_path, third_freeze="[conv1]"):
    base = {"seed": 0,
            "data": {"source": {"name": "digits"}, "test": {"name": "digits", "part": "test"}, "image_size": 16,
                     "channels": 1, "batch_size": 16, "eval_batch_size": 256},
            "model": RESNET, "method": {"name": "source_only"},
            "train": {"iterations": 4, "eval_every": 0, "checkpoint_every": 2, "log_every": 2, "deterministic": True}}
    (tmp_path / "a.yaml").write_text(json.dumps(base))
    second = json.loads(json.dumps(base))
    second["data"]["source"] = {"name": "digits_m"}
    second["data"]["test"] = {"name": "digits_m", "part": "test"}
    (tmp_path / "b.yaml").write_text(json.dumps(second))
    (tmp_path / "chain.yaml").write_text(
        "stages:\n  - {name: one, config: a.yaml}\n"
        f"  - {{name: two, config: b.yaml, freeze: {third_freeze}, iterations: 6}}\n")
    return tmp_path / "chain.yaml"


def test_a_chain_killed_in_stage_two_resumes_there_and_ends_as_an_uninterrupted_one(tmp_path):
    from safetensors.torch import load_file

    from transferlab.chain import run_chain

    path = _chain(tmp_path)
    whole = run_chain(path, tmp_path / "whole", progress=False)
    assert [r["stage"] for r in whole["stages"]] == ["one", "two"]
    assert whole["stages"][1]["freeze"] == ["conv1"]
    stopped = run_chain(path, tmp_path / "cut", progress=False, stop=("two", 4))
    assert stopped == {"stopped": {"stage": "two", "step": 4}}
    first = (tmp_path / "cut" / "one" / "model.safetensors").stat().st_mtime_ns
    assert not (tmp_path / "cut" / "two" / "result.json").exists()
    lines: list[str] = []
    resumed = run_chain(path, tmp_path / "cut", progress=False, report=lines.append)
    assert "finished earlier" in lines[0] and "resuming" in lines[1]
    assert (tmp_path / "cut" / "one" / "model.safetensors").stat().st_mtime_ns == first  # stage 1 not retrained
    result = json.loads((tmp_path / "cut" / "two" / "result.json").read_text())
    assert result["resumed_from_step"] == 4
    a, b = load_file(str(tmp_path / "whole" / "two" / "model.safetensors")), load_file(str(tmp_path / "cut" / "two" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["stages"][1]["metrics"] == whole["stages"][1]["metrics"]
    assert "two" in (tmp_path / "cut" / "chain.md").read_text()


def test_a_changed_chain_is_not_mixed_with_its_old_stages(tmp_path):
    from transferlab.chain import run_chain
    from transferlab.errors import CheckpointError

    run_chain(_chain(tmp_path), tmp_path / "out", progress=False)
    with pytest.raises(CheckpointError, match="different config"):
        run_chain(_chain(tmp_path, third_freeze="[conv1, layer1]"), tmp_path / "out", progress=False)


def test_chain_cli_runs_and_reports_stages_side_by_side(tmp_path, capsys):
    from transferlab.cli import main

    assert main(["chain", str(_chain(tmp_path)), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "two" in out and "test/acc" in out
    assert main(["chain", str(tmp_path / "missing.yaml")]) == 2


def test_model_stages_cli_lists_stages_and_what_is_frozen(tmp_path, capsys):
    from transferlab.cli import main

    (tmp_path / "c.yaml").write_text(json.dumps({
        "data": {"source": {"name": "digits"}, "image_size": 16, "channels": 1},
        "model": {**RESNET, "freeze": ["conv1"]}, "method": {"name": "source_only"}}))
    assert main(["model", "stages", str(tmp_path / "c.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    conv1 = next(line for line in lines if line.startswith("conv1 "))
    layer1 = next(line for line in lines if line.startswith("layer1 "))
    assert "yes" in conv1 and "3,264" in conv1 and "yes" not in layer1  # grey conv1 (64x1x7x7) + bn1 (128)
    assert main(["model", "stages", str(tmp_path / "c.yaml"), "--set", "model.freeze=[nope]"]) == 2


def test_a_finished_stage_with_train_statistics_is_recognised_by_a_new_process(tmp_path):
    """``data.mean: train`` is saved as numbers; rerunning the chain (whose configs still say ``train``) must still
    see the finished stages as this chain's, not as changed configs."""
    from transferlab.chain import run_chain

    path = _chain(tmp_path)
    for name in ("a.yaml", "b.yaml"):
        raw = json.loads((tmp_path / name).read_text())
        raw["data"].update(mean="train", std="train")
        (tmp_path / name).write_text(json.dumps(raw))
    run_chain(path, tmp_path / "out", progress=False)
    saved = json.loads((tmp_path / "out" / "one" / "config.json").read_text())
    assert isinstance(saved["data"]["mean"], list)  # numbers, not "train"
    lines: list[str] = []
    run_chain(path, tmp_path / "out", progress=False, report=lines.append)
    assert all("finished earlier" in line for line in lines)
