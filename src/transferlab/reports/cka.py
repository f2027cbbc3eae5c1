"""``transferlab analyze cka``: linear CKA (Kornblith et al., "Similarity of neural network
representations revisited", 2019) between every encoder layer of two runs, on the same inputs. Shows
which layers adaptation or fine-tuning changed (low CKA on the diagonal) and which stayed (near 1)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..experiment import load_run
from .common import Command, pyplot, run_arguments, run_name, save_figure, table, write_json


def cka_report(run_a: str | Path, run_b: str | Path, *, data_root: str | Path | None = None, max_samples: int = 500,
               seed: int = 0) -> dict[str, Any]:
    """Linear CKA between every layer of run A's encoder and every layer of run B's, on the same
    inputs: run A's test set (its target domain's test part)."""
    from ..analysis.features import layer_activations, sample
    from ..analysis.similarity import linear_cka

    a, b = load_run(run_a, data_root), load_run(run_b, data_root)
    data = a.test if a.test is not None else a.source
    data = sample(data, max_samples, seed)
    acts_a, acts_b = layer_activations(a.method, data, a.transform), layer_activations(b.method, data, b.transform)
    matrix = [[linear_cka(xa, xb) for xb in acts_b.values()] for xa in acts_a.values()]
    return {"run_a": str(run_a), "run_b": str(run_b), "layers_a": list(acts_a), "layers_b": list(acts_b),
            "cka": matrix, "n_samples": len(data), "data": f"{data.name}/{data.part}"}


def plot_cka(report: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    m = np.asarray(report["cka"])
    fig, ax = plt.subplots(figsize=(1.5 + 0.7 * m.shape[1], 1.2 + 0.6 * m.shape[0]), dpi=120)
    image = ax.imshow(m, vmin=0, vmax=1, cmap="magma")
    ax.set_xticks(range(m.shape[1]), report["layers_b"], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(m.shape[0]), report["layers_a"], fontsize=7)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white" if m[i, j] < 0.6 else "black")
    ax.set_ylabel(run_name(report["run_a"]), fontsize=8)
    ax.set_xlabel(run_name(report["run_b"]), fontsize=8)
    fig.colorbar(image, ax=ax, label="linear CKA")
    fig.tight_layout()
    save_figure(fig, path)


def _arguments(parser: argparse.ArgumentParser) -> None:
    run_arguments(parser, max_samples=500)


def _run(args: argparse.Namespace) -> None:
    if len(args.runs) != 2:
        raise ConfigError(f"analyze cka compares two runs; got {len(args.runs)}")
    out = Path(args.out)
    report = cka_report(*args.runs, data_root=args.data_root, max_samples=args.max_samples, seed=args.seed)
    write_json(out / "cka.json", report)
    plot_cka(report, out / "cka.png")
    print(table([[la] + [f"{v:.3f}" for v in row] for la, row in zip(report["layers_a"], report["cka"])],
                ["layer (A) \\ (B)"] + report["layers_b"]))
    print(f"\nwritten: {out / 'cka.json'}, {out / 'cka.png'}")


COMMAND = Command("cka", "linear CKA between every layer of two runs' encoders, on run A's test data", _arguments, _run)
