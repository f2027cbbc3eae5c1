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
