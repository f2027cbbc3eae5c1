"""From a validated :class:`~transferlab.config.Config` to a trained, evaluated run.

This is the only place that wires datasets, transforms, backbone, method and engine together;
the CLI, the demo and benchmarks all go through it, so there is one way to run an experiment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import data as tl_data
from .config import Config, validate
from .data import ArrayDataset, FeatureTransform, ImageTransform
from .engine import Trainer
from .engine.checkpoint import load_tensors
from .errors import CheckpointError, ConfigError, DataError, state_dict_mismatch
from .methods import METHODS, Method
from .models import Encoder, create_backbone


@dataclass
class Experiment:
    config: Config
    method: Method
    source: ArrayDataset
    target: ArrayDataset
    test: ArrayDataset
    transform: Any

    def trainer(self, out_dir: str | Path | None = None, *, progress: bool = True, resume: bool = False) -> Trainer:
        c = self.config
        return Trainer(
            self.method, self.source, self.target, eval_sets={"target_test": self.test}, transform=self.transform,
            train=c.train, optim=c.optim, batch_size=c.data.batch_size, eval_batch_size=c.data.eval_batch_size,
            seed=c.seed, out_dir=out_dir, backbone_lr_scale=c.model.backbone_lr_scale, progress=progress, resume=resume,
        )


def _check_images(source: ArrayDataset, target: ArrayDataset, config: Config) -> int:
    """The input size the backbone sees; refuses mismatched sizes when no resize is configured."""
    if config.data.image_size is not None:
        return config.data.image_size
    sizes = {d.name: tuple(d.x.shape[1:3]) for d in (source, target)}
    if len(set(sizes.values())) > 1:
        raise DataError(
            f"source and target images differ in size ({sizes}); set data.image_size to resize both"
        )
    height, width = next(iter(sizes.values()))
    if height != width:
        raise DataError(f"images are {height}x{width}; set data.image_size to a square size")
    return height


def _check_input(encoder, source: ArrayDataset, transform, config: Config) -> None:
    """Forward two samples once, so a backbone/input mismatch is reported before training starts."""
    x = transform(source.x[:2])
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            encoder(x)
    except RuntimeError as exc:
        raise DataError(
            f"backbone '{config.model.backbone}' cannot take input of shape {tuple(x.shape[1:])} "
            f"(data.channels={config.data.channels}, data.image_size={config.data.image_size}): "
            f"{str(exc).splitlines()[0]}"
        ) from None
    finally:
        encoder.train(was_training)


def build(config: Config, data_root: str | Path | None = None) -> Experiment:
    """Load the datasets and build the transform, encoder and method for ``config``."""
    c = config
    root = data_root or c.data.root
    source = tl_data.load(c.data.source.name, c.data.source.part, root)
    target = tl_data.load(c.data.target.name, c.data.target.part, root)
    test_cfg = c.data.test or type(c.data.target)(name=c.data.target.name, part="test")
    test = tl_data.load(test_cfg.name, test_cfg.part, root)
    if len(target) == 0 or len(test) == 0:
        raise DataError(f"target data is empty ({c.data.target.name}/{c.data.target.part}: {len(target)} samples)")
    if not (source.num_classes == target.num_classes == test.num_classes):
        raise DataError(
            f"label spaces differ: {source.name} has {source.num_classes} classes, {target.name} {target.num_classes}, "
            f"{test.name} {test.num_classes}; closed-set adaptation needs one label space"
        )
    kind = tl_data.DATASETS.get(source.name).kind
    torch.manual_seed(c.seed)  # identical initial weights on every rank
    if kind == "features":
        dims = {d.name: d.x.shape[1] for d in (source, target, test)}
        if len(set(dims.values())) > 1:
            raise DataError(f"feature dimensions differ: {dims}")
        transform = FeatureTransform()
        backbone = create_backbone(c.model.backbone, in_features=int(source.x.shape[1]), pretrained=c.model.pretrained)
    else:
        size = _check_images(source, target, c)
        channels = c.data.channels
        for key in ("mean", "std"):
            values = getattr(c.data, key)
            if len(values) not in (1, channels):
                raise ConfigError(f"data.{key} has {len(values)} values; give 1 or data.channels={channels}")
        expand = lambda v: tuple(v) * (channels if len(v) == 1 else 1)  # noqa: E731
        transform = ImageTransform(channels, size, expand(c.data.mean), expand(c.data.std))
        backbone = create_backbone(c.model.backbone, in_channels=channels, image_size=size, pretrained=c.model.pretrained)
    encoder = Encoder(backbone, c.model.bottleneck_dim)
    _check_input(encoder, source, transform, c)
    method_cfg = c.method_config()
    method = METHODS.get(method_cfg.name)(encoder, source.num_classes, **method_cfg.model_dump(exclude={"name"}))
    return Experiment(c, method, source, target, test, transform)


def train(config: Config, out_dir: str | Path | None, *, data_root: str | Path | None = None, resume: bool = False,
          overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Build and train; with ``out_dir`` the run is saved (config, metrics, checkpoints, final model, result)."""
    experiment = build(config, data_root)  # data and model problems surface before anything is written
    trainer = experiment.trainer(out_dir, progress=progress)
    if out_dir is not None:
        trainer.prepare_run(config.to_dict(), resume=resume, overwrite=overwrite)
    result = trainer.fit()
    return {"method": config.method_config().name, "task": f"{config.data.source.name}->{config.data.target.name}",
            **result}


def load_run(run_dir: str | Path, data_root: str | Path | None = None) -> Experiment:
    """Rebuild a saved run's experiment with its final weights loaded."""
    run_dir = Path(run_dir)
    config_path, weights = run_dir / "config.json", run_dir / "model.safetensors"
    if not config_path.is_file():
        raise CheckpointError(f"{run_dir} is not a transferlab run (no config.json)")
    if not weights.is_file():
        raise CheckpointError(f"{run_dir} has no final model.safetensors: the run did not finish (resume it)")
    config = validate(json.loads(config_path.read_text()))
    experiment = build(config, data_root)
    try:
        experiment.method.load_state_dict(load_tensors(weights))
    except RuntimeError as exc:
        raise CheckpointError(f"{weights} does not match the run's model: {state_dict_mismatch(exc)}") from None
    return experiment
