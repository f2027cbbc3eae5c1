"""Backbones by name, pretrained weights from local files only, and precision."""

import time

import pytest
import torch
from safetensors.torch import save_file

from transferlab.errors import TransferlabError
from transferlab.models import DTN, LeNet, create_backbone

from conftest import tiny_config


@pytest.mark.parametrize("name, channels, size, dim", [("lenet", 1, 28, 500), ("lenet", 3, 16, 500),
                                                       ("dtn", 3, 32, 512)])
def test_digit_backbones(name, channels, size, dim):
    model = create_backbone(name, in_channels=channels, image_size=size)
    assert model.out_features == dim
    assert model(torch.zeros(2, channels, size, size)).shape == (2, dim)


def test_torchvision_and_timm_backbones_by_name():
    tv = create_backbone("torchvision:resnet18", in_channels=3)
    assert tv.out_features == 512 and tv(torch.zeros(1, 3, 64, 64)).shape == (1, 512)
    tm = create_backbone("timm:resnet18", in_channels=1)
    assert tm.out_features == 512 and tm(torch.zeros(1, 1, 64, 64)).shape == (1, 512)
    with pytest.raises(TransferlabError, match="torchvision has no model 'resnet5'"):
        create_backbone("torchvision:resnet5")
    with pytest.raises(TransferlabError, match="unknown backbone 'lenett'. Did you mean 'lenet'"):
        create_backbone("lenett")


def test_pretrained_offline_is_a_clear_error_not_a_hang(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(TransferlabError, match="torchvision-resnet18.safetensors. This machine may be offline"):
        create_backbone("torchvision:resnet18", pretrained=True)
    with pytest.raises(TransferlabError, match="timm:resnet18"):
        create_backbone("timm:resnet18", pretrained=True)
    assert time.perf_counter() - started < 30


def test_pretrained_weights_from_local_files(tmp_path):
    torch.manual_seed(0)
    donor = LeNet(1, 28)
    save_file(donor.state_dict(), str(tmp_path / "lenet.safetensors"))
    model = create_backbone("lenet", in_channels=1, image_size=28, pretrained=str(tmp_path / "lenet.safetensors"))
    for key, value in donor.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    # A torch file holding only tensors loads with weights_only=True ...
    torch.save(DTN(3, 32).state_dict(), tmp_path / "dtn.pt")
    create_backbone("dtn", in_channels=3, image_size=32, pretrained=str(tmp_path / "dtn.pt"))


def test_bf16_autocast_trains_with_finite_losses(tmp_path):
    """Under ``precision: bf16`` the training forwards run in bfloat16, every logged loss is finite, and the
    classification loss falls."""
    from torch.nn.modules.module import register_module_forward_hook

    from transferlab.engine.metrics import MetricsLog
    from transferlab.experiment import train

    dtypes = set()
    handle = register_module_forward_hook(
        lambda module, args, out: dtypes.add(out.dtype) if isinstance(module, torch.nn.Linear) and module.training else None)
    try:
        for method in ("dann", "cdan_e"):
            train(tiny_config(method, iterations=40, train={"precision": "bf16", "deterministic": False, "log_every": 10}),
                  tmp_path / method, progress=False)
            records = [r for r in MetricsLog.read(tmp_path / method / "metrics.jsonl") if r["kind"] == "train"]
            losses = [r["cls_loss"] for r in records]
            assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses + [r["transfer_loss"] for r in records])))
            assert losses[-1] < losses[0], losses
    finally:
        handle.remove()
    assert dtypes == {torch.bfloat16}


# --- the configurable MLP (feature-vector input) ---------------------------------------------------

def test_mlp_default_is_the_original_two_layer_relu_network():
    from transferlab.models import MLP

    model = MLP(8)
    assert [type(m).__name__ for m in model.net] == ["Linear", "ReLU", "Dropout", "Linear", "ReLU"]
    assert model.net[2].p == 0.5 and model.out_features == 256
    assert set(model.state_dict()) == {"net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias"}  # old weights load
    assert [type(m).__name__ for m in MLP(8, hidden=16).net] == ["Linear", "ReLU", "Dropout", "Linear", "ReLU"]


@pytest.mark.parametrize("hidden, activation, dropout, layout, out", [
    ([100], "sigmoid", 0.5, ["Linear", "Sigmoid"], 100),                      # DANN's shallow network
    ([32, 16, 8], "gelu", 0.1, ["Linear", "GELU", "Dropout", "Linear", "GELU", "Dropout", "Linear", "GELU"], 8),
    ([32, 16], "tanh", 0.0, ["Linear", "Tanh", "Linear", "Tanh"], 16),
    ([], "relu", 0.5, [], 8),                                                  # features pass through
])
def test_mlp_widths_activation_and_dropout(hidden, activation, dropout, layout, out):
    from transferlab.models import MLP

    model = MLP(8, hidden, activation, dropout)
    assert [type(m).__name__ for m in model.net] == layout and model.out_features == out
    assert [(m.in_features, m.out_features) for m in model.net if isinstance(m, torch.nn.Linear)] == list(
        zip([8, *hidden[:-1]], hidden))
    assert all(m.p == dropout for m in model.net if isinstance(m, torch.nn.Dropout))
    assert model(torch.zeros(3, 8)).shape == (3, out)


def test_mlp_refuses_an_unknown_activation_or_dropout():
    from transferlab.models import MLP

    with pytest.raises(TransferlabError, match="unknown MLP activation 'relu6'. Valid: relu, gelu"):
        MLP(8, activation="relu6")
    with pytest.raises(TransferlabError, match=r"dropout must lie in \[0, 1\); got 1.0"):
        MLP(8, dropout=1.0)


def test_model_mlp_config_builds_that_network_for_feature_data():
    import numpy as np

    from transferlab.data import register_embedded
    from transferlab.errors import ConfigError
    from transferlab.experiment import build, load_config

    def make(part):
        rng = np.random.default_rng(0 if part == "train" else 1)
        return {"x": rng.normal(size=(40, 12)).astype(np.float32), "y": np.arange(40) % 3}

    register_embedded("test_features_12d", make, num_classes=3, kind="features")
    raw = {"data": {"source": {"name": "test_features_12d"}, "test": {"name": "test_features_12d", "part": "test"},
                    "batch_size": 8},
           "model": {"backbone": "mlp", "bottleneck_dim": 0, "mlp": {"hidden": [20, 10], "activation": "tanh", "dropout": 0.2}},
           "method": {"name": "supervised"}, "train": {"iterations": 2, "eval_every": 0, "checkpoint_every": 0}}
    backbone = build(load_config(raw=raw)).method.encoder.backbone
    assert [type(m).__name__ for m in backbone.net] == ["Linear", "Tanh", "Dropout", "Linear", "Tanh"]
    assert backbone.net[0].in_features == 12 and backbone.out_features == 10 and backbone.net[2].p == 0.2
    raw["model"]["mlp"] = {"hidden": [20], "activaton": "tanh"}
    with pytest.raises(ConfigError, match="model.mlp.activaton: unknown key. Did you mean 'activation'"):
        load_config(raw=raw)
