"""``transferlab analyze gradcam``: where in each test image a finished convolutional classifier finds the evidence
for the class it predicts (Selvaraju et al., "Grad-CAM", ICCV 2017; :mod:`transferlab.analysis.gradcam`).

Draws chosen (``--indices``) or seeded random (``--n``, ``--seed``) images of the run's test set (or ``--on``) as
the model sees them (resized, channels adapted), each next to its Grad-CAM map of the predicted class over the last
convolution of the encoder (or ``--layer``), captioned with the index, true and predicted class and the predicted
class's probability. Writes ``gradcam.png`` (the sheet) and ``gradcam.json`` (what each cell shows).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..validation import closest
from ..experiment import eval_device
from .calibration import classifier_run
from .common import Command, table, write_json

#: Images are enlarged by an integer factor to at least this many pixels a side on the sheet (8x8 digits stay legible).
MIN_SIDE = 128
#: Images per Grad-CAM pass (bounds the memory of a large backbone).
CHUNK = 32


class _Classifier(nn.Module):
    """A method as the images -> logits module :func:`~transferlab.analysis.gradcam.grad_cam` takes (the logits it
    predicts target data with). Its layers keep their names in the method, behind ``method.``."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.predict_on(x, "target")


def target_layer(method: nn.Module, layer: str | None, run_dir: str | Path, example: torch.Tensor | None = None) -> str:
    """The layer whose maps are weighted, named as in ``method.named_modules()``: ``layer``, checked, or the last
    convolution of the encoder that sees target data whose maps (for inputs like ``example``) are larger than 1x1."""
    from ..analysis.gradcam import last_conv_layer

    convs = [name for name, module in method.named_modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        backbone = getattr(getattr(method, "encoder", None), "backbone", None)
        what = f" ({type(backbone).__name__} backbone)" if backbone is not None else ""
        raise ConfigError(f"{run_dir}: the run's model{what} has no convolutional layer, so Grad-CAM has no feature "
                          f"maps to weight; analyze gradcam needs a run with a convolutional backbone (lenet, dtn, "
                          f"torchvision:resnet18, ...)")
    if layer is None:
        encoder = method.encoder_for("target")
        prefix = next((name for name, module in method.named_modules() if module is encoder), None)
        try:
            inner = last_conv_layer(encoder, example)
        except ConfigError:  # the convolutions are outside the encoder: take the method's last one
            return convs[-1]
        return f"{prefix}.{inner}" if prefix else inner
    names = [name for name, _ in method.named_modules() if name]
    if layer not in names:
        raise ConfigError(f"--layer: the run's model has no layer '{layer}'.{closest(layer, names)} Its convolutional "
                          f"layers: {', '.join(convs)}")
    return layer


def _class_name(classes: list[str] | None, k: int) -> str:
    return classes[k] if classes and 0 <= k < len(classes) else str(k)


def gradcam_analysis(run_dir: str | Path, out: str | Path, *, on: str | None = None, n: int = 16,
                     indices: list[int] | None = None, layer: str | None = None, seed: int = 0,
                     data_root: str | Path | None = None) -> dict[str, Any]:
    """Grad-CAM maps of the predicted class for chosen (``indices``) or ``n`` seeded random test images of a finished
    image classification run, written as one PNG sheet ``<out>/gradcam.png``; returns what it shows: ``run``,
    ``test`` (``name/part``), ``layer``, ``sheet`` (the PNG's path) and per image ``index``, ``label``,
    ``predicted``, ``probability`` (of the predicted class) and their class names."""
    from ..analysis.gradcam import choose_images, grad_cam, write_sheet

    config, experiment = classifier_run(run_dir, on, data_root, "gradcam")
    method, test, transform = experiment.method, experiment.test, experiment.transform
    if experiment.modality.kind != "image" or not hasattr(transform, "mean"):
        raise ConfigError(f"{run_dir} takes {experiment.modality.kind} input; Grad-CAM explains image classifiers "
                          f"(a run on an image dataset with a convolutional backbone)")
    chosen = choose_images(len(test), indices=indices, n=n, seed=seed)
    if not chosen:
        raise ConfigError("no images to draw: pass --n 1 or more, or --indices")
    device = eval_device(config)
    method.to(device)
    name = target_layer(method, layer, run_dir, transform(test.batch(torch.tensor(chosen[:1])).to(device)).float())
    model = _Classifier(method)
    shown, cams, rows = [], [], []
    for start in range(0, len(chosen), CHUNK):
        index = torch.tensor(chosen[start:start + CHUNK], dtype=torch.long)
        inputs = transform(test.batch(index).to(device)).float()
        try:
            maps = grad_cam(model, inputs, target_layer=f"method.{name}")
        except ConfigError as exc:  # said of the wrapper's names: say it with the method's, and the CLI's option
            raise ConfigError(str(exc).replace("'method.", "'").replace("target_layer", "--layer")) from None
        was_training = method.training
        method.eval()
        try:
            with torch.no_grad():
                probabilities = torch.softmax(model(inputs).float(), dim=1).cpu()
        finally:
            method.train(was_training)
        mean = torch.tensor(transform.mean, dtype=inputs.dtype, device=device).view(1, -1, 1, 1)
        std = torch.tensor(transform.std, dtype=inputs.dtype, device=device).view(1, -1, 1, 1)
        shown.append((inputs * std + mean).clamp(0.0, 1.0).cpu())  # the model's input, back in [0, 1]
        cams.append(maps.cpu())
        for i, p in zip(index.tolist(), probabilities):
            label, predicted = int(test.y[i]), int(p.argmax())
            rows.append({"index": i, "label": label, "predicted": predicted, "probability": float(p[predicted]),
                         "label_name": _class_name(test.classes, label),
                         "predicted_name": _class_name(test.classes, predicted)})
    images = torch.cat(shown)
    titles = [f"#{r['index']} p={r['probability']:.2f} true {r['label_name']} pred {r['predicted_name']}" for r in rows]
    scale = max(1, math.ceil(MIN_SIDE / max(images.shape[-2:])))
    sheet = write_sheet(images, torch.cat(cams), Path(out) / "gradcam.png", titles=titles, scale=scale)
    return {"run": str(run_dir), "test": f"{test.name}/{test.part}", "layer": name, "class_explained": "predicted",
            "seed": seed if indices is None else None, "sheet": str(sheet), "images": rows}


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a finished image classification run with a convolutional backbone")
    parser.add_argument("--on", metavar="DATASET[:PART]", help="the labelled image set to draw from (default: the "
                        "run's test set; default part: test)")
    parser.add_argument("--n", type=int, default=16, help="random images to draw, by --seed (default 16)")
    parser.add_argument("--indices", type=int, nargs="+", metavar="I", help="draw these images of the set instead")
    parser.add_argument("--layer", help="the layer whose feature maps are weighted, as the model names it (e.g. "
                        "encoder.backbone.conv.3; default: the encoder's last convolution)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="folder for gradcam.png and gradcam.json")


def _run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    report = gradcam_analysis(args.run, out, on=args.on, n=args.n, indices=args.indices, layer=args.layer,
                              seed=args.seed, data_root=args.data_root)
    write_json(out / "gradcam.json", report)
    rows = [[str(r["index"]), r["label_name"], r["predicted_name"], f"{r['probability']:.3f}"] for r in report["images"]]
    print(table(rows, ["image", "true", "predicted", "p(predicted)"]))
    right = sum(r["label"] == r["predicted"] for r in report["images"])
    print(f"\n{right}/{len(rows)} drawn images predicted right; maps of the predicted class at {report['layer']}")
    print(f"written: {report['sheet']}, {out / 'gradcam.json'}")


COMMAND = Command("gradcam", "Grad-CAM maps of a convolutional run's predictions on test images, as a PNG sheet",
                  _arguments, _run)
