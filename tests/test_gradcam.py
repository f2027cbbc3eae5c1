"""transferlab.analysis.gradcam: Grad-CAM on hand-built networks whose evidence is known by construction,
its hygiene (hooks, modes, flags, gradients), overlays and PNG sheets."""

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image
from torch import nn

from transferlab.analysis.gradcam import (
    PAD, TITLE_HEIGHT, choose_images, grad_cam, last_conv_layer, overlay, pick_images, write_sheet,
)
from transferlab.errors import ConfigError, DataError
from transferlab.models.backbones import DTN, MLP, LeNet

RED, GREEN = 0, 1


class PatchNet(nn.Module):
    """Two input colours. Conv channel k (stride 2) is mean(3×3 window of colour k) − 0.5: positive only where
    a window lies mostly on a bright patch of colour k. Logits from global average pooling of the ReLU:
    class 1 = red − 0.5·green, class 0 = green − 0.5·red. So class 1's evidence is the red patch, class 0's the
    green one, and the other colour counts against (negative α: the ReLU of eq. 2 matters)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, stride=2, padding=1)
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[RED, RED] = 1 / 9
            self.conv.weight[GREEN, GREEN] = 1 / 9
            self.conv.bias.fill_(-0.5)
            self.head.weight.copy_(torch.tensor([[-0.5, 1.0], [1.0, -0.5]]))  # rows: class 0, class 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _image(*patches: tuple[int, int, int, int]) -> torch.Tensor:
    """A blank 2×28×28 image with bright squares (colour, row, column, size)."""
    image = torch.zeros(2, 28, 28)
    for colour, row, col, size in patches:
        image[colour, row:row + size, col:col + size] = 1.0
    return image


def _peak_in(cam: torch.Tensor, row: int, col: int, size: int, slack: int = 2) -> bool:
    r, c = divmod(int(cam.argmax()), cam.shape[-1])
    return row - slack <= r < row + size + slack and col - slack <= c < col + size + slack


def _classifier(backbone: nn.Module, classes: int = 10) -> nn.Module:
    return nn.Sequential(backbone, nn.Linear(backbone.out_features, classes))


# ---------------------------------------------------------------- the maps


def test_map_has_input_size_and_lies_in_unit_interval():
    # LeNet's last conv map is 8×8 for 28×28 digits; the map must come back at 28×28, in [0, 1], peak 1.
    torch.manual_seed(0)
    model = _classifier(LeNet(1, 28))
    cam = grad_cam(model, torch.rand(3, 1, 28, 28))
    assert cam.shape == (3, 28, 28) and cam.dtype == torch.float32
    assert cam.min() >= 0 and torch.allclose(cam.amax(dim=(1, 2)), torch.ones(3))
    # Non-square input (5×9 conv map): catches height and width swapped in the upsampling.
    net = nn.Sequential(nn.Conv2d(1, 4, 4, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 9, 3))
    cam = grad_cam(net, torch.rand(2, 1, 20, 36))
    assert cam.shape == (2, 20, 36) and cam.min() >= 0 and cam.max() <= 1


def test_map_peaks_on_the_planted_patch():
    # A red 6×6 square is the only evidence for class 1 (the predicted class); two asymmetric positions catch
    # a transposed or shifted map. The PatchNet map has negative values off the patch: catches a missing ReLU.
    images = torch.stack([_image((RED, 3, 18, 6)), _image((RED, 18, 4, 6))])
    cam = grad_cam(PatchNet(), images)
    assert cam.shape == (2, 28, 28) and cam.min() >= 0 and cam.max() <= 1
    assert _peak_in(cam[0], 3, 18, 6) and _peak_in(cam[1], 18, 4, 6)
    # The map is (near) zero far from the patch.
    assert cam[0, 20:, :10].max() == 0 and cam[1, :10, 15:].max() == 0


def test_class_choice_moves_the_map():
    # Red (8×8, larger: class 1 is predicted) top left, green (6×6) bottom right. Explaining class 0 must
    # point at green: catches class_index ignored, or α not taken from the chosen class's gradients.
    image = _image((RED, 3, 3, 8), (GREEN, 18, 18, 6))
    model = PatchNet()
    assert model(image[None]).argmax().item() == 1
    predicted, = grad_cam(model, image[None])
    as_zero, = grad_cam(model, image[None], class_index=0)
    assert _peak_in(predicted, 3, 3, 8) and _peak_in(as_zero, 18, 18, 6)
    assert predicted[18:24, 18:24].max() == 0 and as_zero[3:11, 3:11].max() == 0
    # One class per image: catches the per-image index being broadcast or read from the wrong row.
    per_image = grad_cam(model, torch.stack([image, image]), class_index=torch.tensor([0, 1]))
    assert torch.allclose(per_image[0], as_zero) and torch.allclose(per_image[1], predicted)
    with pytest.raises(ConfigError, match="class_index"):
        grad_cam(model, image[None], class_index=2)


def test_blank_image_gives_an_all_zero_map():
    # No window reaches the threshold, so every gradient is zero: the map must be 0, not 0/0 = NaN.
    cam = grad_cam(PatchNet(), torch.zeros(1, 2, 28, 28))
    assert torch.equal(cam, torch.zeros(1, 28, 28))


def test_no_hooks_modes_flags_or_grads_left_behind():
    torch.manual_seed(0)
    model = _classifier(LeNet(1, 28))
    backbone = model[0]
    for p in backbone.parameters():  # a frozen backbone: the target conv's output needs no grad of its own
        p.requires_grad_(False)
    target = backbone.conv[3]
    user_hook = target.register_forward_hook(lambda *_: None)  # someone else's hook must survive
    model.train()
    backbone.conv[4].eval()  # mixed modes (a frozen dropout): catches restoring with model.train(was_training)

    def state():
        hooks = {name: (dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks),
                        dict(m._backward_pre_hooks)) for name, m in model.named_modules()}
        return hooks, {n: m.training for n, m in model.named_modules()}, {n: p.requires_grad
                                                                         for n, p in model.named_parameters()}

    before = state()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():  # catches a forward without torch.enable_grad
        cam = grad_cam(model, x)
    assert cam.amax(dim=(1, 2)).min() > 0  # it worked with a frozen backbone
    with pytest.raises(ConfigError):  # an error after the forward must clean up too (finally)
        grad_cam(model, x, class_index=99)
    assert state() == before
    assert list(target._forward_hooks) == [user_hook.id]
    assert all(p.grad is None for p in model.parameters())  # the trainable head included: no .backward()
    assert not x.requires_grad


def test_eval_mode_inside_makes_maps_deterministic_and_per_image():
    # DTN in train mode has dropout and batch-statistics batch norm: Grad-CAM must run in eval mode, so two
    # calls agree and an image's map does not depend on the rest of its batch.
    torch.manual_seed(0)
    model = _classifier(DTN(3, 32)).train()
    x = torch.rand(3, 3, 32, 32)
    first, second = grad_cam(model, x), grad_cam(model, x)
    assert torch.allclose(first, second)
    assert torch.allclose(grad_cam(model, x[:1]), first[:1], atol=1e-5)
    assert model.training


def test_inplace_relu_after_target_channels_last_and_resnet():
    # ReLU(inplace=True) right after the target conv must not change A (catches keeping the hooked tensor
    # itself); channels_last inputs give the same maps.
    def net(inplace: bool) -> nn.Module:
        torch.manual_seed(1)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                             nn.ReLU(inplace), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    x = torch.rand(2, 3, 16, 16)
    reference = grad_cam(net(False), x)
    assert torch.allclose(grad_cam(net(True), x), reference, atol=1e-6)
    assert torch.allclose(grad_cam(net(False), x.to(memory_format=torch.channels_last)), reference, atol=1e-6)
    assert not torch.allclose(grad_cam(net(False), x, target_layer="0"), reference)  # target_layer is used


def test_last_conv_layer():
    import torchvision

    resnet = torchvision.models.resnet18(weights=None)
    assert last_conv_layer(resnet) == "layer4.1.conv2"
    assert last_conv_layer(LeNet(1, 28)) == "conv.3"
    assert last_conv_layer(DTN(3, 32)) == "conv.8"
    assert grad_cam(resnet, torch.rand(1, 3, 64, 64)).shape == (1, 64, 64)
    with pytest.raises(ConfigError, match="no nn.Conv2d"):
        last_conv_layer(MLP(10))
    with pytest.raises(ConfigError, match="no layer '0.conv.9'"):
        grad_cam(_classifier(LeNet(1, 28)), torch.rand(1, 1, 28, 28), target_layer="0.conv.9")
    with pytest.raises(ConfigError, match="not feature maps"):
        grad_cam(_classifier(LeNet(1, 28)), torch.rand(1, 1, 28, 28), target_layer="1")


# ---------------------------------------------------------------- drawing


def test_overlay_colours_and_grey_images():
    cam = torch.zeros(4, 5)
    cam[1, 2] = 1.0
    grey = torch.zeros(1, 4, 5)
    out = overlay(grey, cam)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    hot, cold = out[1, 2].astype(int), out[0, 0].astype(int)
    assert hot[0] > hot[2] and cold[2] > cold[0]  # jet: red where the evidence is, blue where none
    # alpha = 1 is the colour map alone; alpha = 0 the image alone (grey spread to RGB; uint8 = float / 255).
    jet = np.round(colormaps["jet"](cam.numpy())[..., :3] * 255).astype(np.uint8)
    assert np.array_equal(overlay(grey, cam, alpha=1.0), jet)
    image8 = torch.randint(0, 256, (1, 4, 5), dtype=torch.uint8)
    alone = overlay(image8, cam, alpha=0.0)
    assert np.array_equal(alone, np.repeat(image8.numpy()[0, :, :, None], 3, axis=2))
    assert np.abs(overlay(image8.float() / 255, cam).astype(int) - overlay(image8, cam).astype(int)).max() <= 1
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        overlay(grey - 2.0, cam)  # still normalised
    with pytest.raises(DataError, match="height and width"):
        overlay(grey, cam.T)


def test_write_sheet_size_layout_and_no_temp_file(tmp_path):
    torch.manual_seed(0)
    images, cams = torch.rand(3, 3, 10, 12), torch.rand(3, 10, 12)
    path = write_sheet(images, cams, tmp_path / "nested" / "sheet.png", columns=2)
    assert sorted(p.name for p in path.parent.iterdir()) == ["sheet.png"]
    sheet = np.array(Image.open(path))
    # 2 columns of (image | overlay) pairs, 2 rows, PAD around and between.
    assert sheet.shape == (2 * 10 + 3 * PAD, 2 * (2 * 12 + PAD) + 3 * PAD, 3)
    # Image 2 is first in the second row: the original, then its overlay to the right.
    top, left = PAD + 10 + PAD, PAD
    expected_image = np.round(images[2].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert np.array_equal(sheet[top:top + 10, left:left + 12], expected_image)
    assert np.array_equal(sheet[top:top + 10, left + 12 + PAD:left + 24 + PAD], overlay(images[2], cams[2]))
    # Titles add a strip per row; scale enlarges pixels; writing again replaces the file.
    path = write_sheet(list(images), list(cams), path, titles=["a", "b", "c"], columns=4, scale=2)
    assert Image.open(path).size == (3 * (2 * 24 + PAD) + 4 * PAD, 20 + TITLE_HEIGHT + 2 * PAD)
    assert sorted(p.name for p in path.parent.iterdir()) == ["sheet.png"]
    # Grey images are drawn in RGB, the original as grey.
    grey = torch.rand(2, 1, 8, 8)
    sheet = np.array(Image.open(write_sheet(grey, torch.rand(2, 8, 8), tmp_path / "grey.png")))
    assert sheet.shape == (8 + 2 * PAD, 2 * (16 + PAD) + 3 * PAD, 3)
    expected_grey = np.round(grey[1, 0].numpy() * 255).astype(np.uint8)[:, :, None].repeat(3, axis=2)
    left = PAD + 16 + PAD + PAD
    assert np.array_equal(sheet[PAD:PAD + 8, left:left + 8], expected_grey)


def test_write_sheet_file_gets_the_mode_of_any_new_file(tmp_path):
    import os

    umask = os.umask(0o022)  # a temporary file is 0600 whatever the umask: the sheet must not keep that
    try:
        path = write_sheet(torch.rand(1, 1, 4, 4), torch.rand(1, 4, 4), tmp_path / "sheet.png")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_write_sheet_rejects_mismatched_inputs(tmp_path):
    images, cams = torch.rand(3, 1, 8, 8), torch.rand(2, 8, 8)
    with pytest.raises(DataError, match="3 images but 2 maps"):
        write_sheet(images, cams, tmp_path / "sheet.png")
    with pytest.raises(DataError, match="titles"):
        write_sheet(images, torch.rand(3, 8, 8), tmp_path / "sheet.png", titles=["only one"])
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- which images


def test_pick_and_choose_images():
    picked = pick_images(100, 8, seed=3)
    assert picked == pick_images(100, 8, seed=3) and picked != pick_images(100, 8, seed=4)
    assert len(set(picked)) == 8 and picked == sorted(picked) and all(0 <= i < 100 for i in picked)
    assert picked != list(range(8))  # random, not the first ones
    assert pick_images(5, 8, seed=0) == [0, 1, 2, 3, 4]
    assert choose_images(100, n=8, seed=3) == picked
    assert choose_images(100, indices=[7, 2, 50]) == [7, 2, 50]
    with pytest.raises(DataError, match="outside"):
        choose_images(10, indices=[3, 10])
    with pytest.raises(DataError, match="more than once"):
        choose_images(10, indices=[3, 3])


def test_the_default_layer_skips_convolutions_whose_maps_are_one_cell():
    """ResNet-18 on 28 px images: layer4's maps are 1x1 (a Grad-CAM map upsampled from one cell is constant), so the
    default is the last convolution of layer3 (2x2); without an example input, registration order decides."""
    from transferlab.models import create_backbone

    net = create_backbone("torchvision:resnet18", in_channels=1)
    assert last_conv_layer(net) == "model.layer4.1.conv2"
    assert last_conv_layer(net, torch.rand(2, 1, 28, 28)) == "model.layer3.1.conv2"
    assert last_conv_layer(net, torch.rand(2, 1, 28, 28), min_side=4) == "model.layer2.1.conv2"
    assert last_conv_layer(net, torch.rand(2, 1, 64, 64)) == "model.layer4.1.conv2"
