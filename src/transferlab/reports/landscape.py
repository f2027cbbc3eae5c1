"""``transferlab analyze landscape``: the loss landscape of a trained classifier (Li et al., "Visualizing
the loss landscape of neural nets", 2018): the loss along the line from its initialisation to its trained
weights, a filter-normalised 2-D slice around the solution, and its sharpness."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn.functional as F

from ..data import iterate_batches
from ..errors import TransferlabError
from ..experiment import build, load_run
from .common import Command, pyplot, run_arguments, save_figure, write_json


def landscape_report(run_dir: str | Path, path: Path, *, data_root: str | Path | None = None, max_samples: int = 1000,
                     steps: int = 11, span: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """Cross-entropy on (a sample of) the training set along θ(α) = (1−α)θ_init + αθ_final, on a 2-D
    filter-normalised slice around θ_final, and the sharpness at radius 0.1. θ_init is the run's
    initialisation rebuilt from its config (pretrained weights included, via ``model.encoder_init``)."""
    from ..analysis.features import sample
    from ..analysis.landscape import interpolate, sharpness, slice_2d

    trained = load_run(run_dir, data_root)
    if not trained.method.classifies():
        raise TransferlabError(f"{run_dir} has no classifier: the landscape needs a supervised run")
    initial = build(trained.config, data_root).method.state_dict()
    final = {k: v.clone() for k, v in trained.method.state_dict().items()}
    labelled = trained.source if trained.source.y is not None else trained.test
    data = sample(labelled, max_samples, seed)
    batches = list(iterate_batches(data, 1024, transform=trained.transform))
    method = trained.method.eval()

    def loss_fn(model) -> float:
        total = sum(F.cross_entropy(model.predict(b.x).float(), b.y, reduction="sum").item() for b in batches)
        return total / len(data)

    alphas = np.linspace(-0.25, 1.25, 31)
    line = interpolate(method, initial, final, loss_fn, alphas)
    grid = slice_2d(method, loss_fn, steps=steps, span=span, seed=seed)
    sharp = sharpness(method, loss_fn, radius=0.1, n_directions=8, seed=seed)
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.8), dpi=120)
    a.plot(alphas, line, marker=".")
    a.axvline(0, color="grey", lw=0.5)
    a.axvline(1, color="grey", lw=0.5)
    a.set_xlabel("α  (0: initialisation, 1: trained)")
    a.set_ylabel("training loss")
    a.set_yscale("log")
    contour = b.contourf(grid["alphas"], grid["betas"], np.log10(grid["losses"].T + 1e-12), levels=20, cmap="viridis")
    fig.colorbar(contour, ax=b, label="log10 loss")
    b.set_xlabel("δ")
    b.set_ylabel("η")
    b.set_title("filter-normalised slice around the trained weights", fontsize=8)
    fig.suptitle(f"{Path(run_dir).name} (sharpness {sharp:.3g})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return {"run": str(run_dir), "alphas": alphas.tolist(), "interpolation_loss": line, "sharpness": sharp,
            "slice_center_loss": float(grid["losses"][steps // 2, steps // 2]), "slice_min": float(grid["losses"].min()),
            "slice_max": float(grid["losses"].max()), "plot": str(path)}


def _run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    for run in args.runs:
        info = landscape_report(run, out / f"landscape_{Path(run).name}.png", data_root=args.data_root,
                                max_samples=args.max_samples, seed=args.seed)
        write_json(out / f"landscape_{Path(run).name}.json", info)
        print(f"{run}: sharpness {info['sharpness']:.4g}, plot {info['plot']}")


COMMAND = Command("landscape", "loss from initialisation to solution, 2-D filter-normalised slice, sharpness",
                  run_arguments, _run)
