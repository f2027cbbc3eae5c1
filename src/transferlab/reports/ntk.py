"""``transferlab analyze ntk``: the neural-tangent-kernel view of transfer (Jacot et al., "Neural Tangent Kernel",
NeurIPS 2018) for pretrained runs. For each run and each k labels per class of its downstream task, the
empirical NTK of the transfer model (the run's encoder + a new linear head, as the protocol's ``finetune`` cell
builds it) and of the same architecture at random initialisation (the ``scratch`` cell) is used for

* kernel-regression accuracy on the target test samples (the lazy, linearised model, from the k labelled
  samples per class),
* centred kernel–target alignment with the test labels (Cortes et al., JMLR 2012),
* optionally (``--finetune``, the default) the real fine-tuning of that cell, and how far its kernel moved from
  start to end (relative Frobenius change; 1 − cosine, Fort et al., NeurIPS 2020).

A pretrained network whose NTK already classifies the target well, and moves little when fine-tuned, is the NTK
explanation of transfer; a kernel that moves a lot says fine-tuning left the lazy regime."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import ArrayDataset, iterate_batches
from ..errors import TransferlabError
from ..experiment import build, method_config, train
from ..protocol import read_run_config, transfer_config
from .common import Command, parse_labels, pyplot, run_arguments, run_name, save_figure, table, write_json

INITS = {"pretrained": "finetune", "random": "scratch"}  # the NTK's starting point -> the protocol strategy


class _Logits(nn.Module):
    """A method's classifier as a module (``forward`` = ``predict``), for ``torch.func.functional_call``."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.predict(x)


def _inputs(dataset: ArrayDataset, transform) -> tuple[torch.Tensor, np.ndarray]:
    batches = list(iterate_batches(dataset, 512, transform=transform))
    return torch.cat([b.x for b in batches]), torch.cat([b.y for b in batches]).numpy()


def _parameter_names(method: nn.Module, prefixes: Sequence[str] | None) -> list[str] | None:
    """``method.``-qualified names of the trainable parameters that start with one of ``prefixes`` (None: all)."""
    if not prefixes:
        return None
    names = [n for n, p in method.named_parameters() if p.requires_grad and n.startswith(tuple(prefixes))]
    if not names:
        raise TransferlabError(f"no trainable parameter starts with {list(prefixes)}; names look like "
                               f"{[n for n, _ in method.named_parameters()][:4]} ...")
    return [f"method.{n}" for n in names]


def _finished(folder: Path, config) -> bool:
    """Whether ``folder`` holds a finished run of exactly ``config``."""
    if not ((folder / "model.safetensors").is_file() and (folder / "result.json").is_file()):
        return False
    try:
        return read_run_config(folder).model_dump() == config.model_dump()
    except TransferlabError:
        return False


def _kernel_stats(phi: torch.Tensor, y_train: np.ndarray, y_test: np.ndarray, ridge: float) -> dict[str, Any]:
    from ..analysis.ntk import kernel_alignment, kernel_regression

    n = len(y_train)
    k = (phi @ phi.T).numpy()
    k_train, k_test_train, k_test = k[:n, :n], k[n:, :n], k[n:, n:]
    scale = float(np.mean(np.diag(k_train)))
    predictions = kernel_regression(k_train, y_train, k_test_train, ridge * scale)
    return {"acc": 100.0 * float((predictions == y_test).mean()), "alignment": kernel_alignment(k_test, y_test),
            "ridge": ridge * scale, "k_test": k_test}


def ntk_report(run_dir: str | Path, *, labels: Sequence[int | str] = (1, 10, 100), data_root: str | Path | None = None,
               max_samples: int = 1000, seed: int = 0, target: str | None = None, finetune: bool = True,
               out_dir: Path | None = None, projection: int | None = 4096, projection_kind: str = "sketch",
               ridge: float = 1e-3, output: str = "sum", parameters: Sequence[str] | None = None,
               batch_size: int = 64, log=print) -> list[dict[str, Any]]:
    """One row per (initialisation, k): the NTK of the protocol's transfer model for ``run_dir`` (``pretrained``:
    the run's encoder and a new head, the ``finetune`` cell; ``random``: the same architecture from random
    initialisation, the ``scratch`` cell), with transfer seed = the run's own seed (as the grid pairs them) and the
    test samples drawn with ``seed`` (at most ``max_samples``, the same for every row).

    Kernel regression uses ``ridge`` × the mean diagonal of the training kernel. With ``finetune`` the cell is
    trained by the protocol (saved under ``out_dir``, reused when already there) and the row adds its test accuracy
    (the full test set, as the grid reports it, and on the kernel's test samples), the kernel-regression accuracy
    and alignment of the fine-tuned network's NTK, and the kernel movement on the test samples."""
    from ..analysis.features import sample
    from ..analysis.ntk import jacobian_features, kernel_distance
    from ..engine.checkpoint import load_tensors

    if finetune and out_dir is None:
        raise TransferlabError("fine-tuning (for the fine-tuned accuracy and the kernel movement) needs out_dir")
    pre = read_run_config(run_dir)
    options = {"output": output, "projection": projection, "projection_kind": projection_kind, "seed": seed,
               "batch_size": batch_size}
    rows = []
    for init, strategy in INITS.items():
        for k in labels:
            config = transfer_config(run_dir, strategy, k, pre.seed, data_root=data_root, target=target)
            experiment = build(config, data_root)
            train_x, y_train = _inputs(experiment.source, experiment.transform)
            test_x, y_test = _inputs(sample(experiment.test, max_samples, seed), experiment.transform)
            inputs = torch.cat([train_x, test_x])
            model = _Logits(experiment.method)
            names = _parameter_names(experiment.method, parameters)
            start = _kernel_stats(jacobian_features(model, inputs, parameters=names, **options), y_train, y_test, ridge)
            row = {"run": str(run_dir), "pretraining": method_config(pre).name, "init": init, "labels_per_class": k,
                   "seed": pre.seed, "target": experiment.source.name, "n_train": len(y_train), "n_test": len(y_test),
                   "kernel_regression_acc": start["acc"], "alignment": start["alignment"], "ridge": start["ridge"]}
            if finetune:
                folder = Path(out_dir) / f"{run_name(run_dir).replace('/', '_')}_{init}_k{k}"
                if _finished(folder, config):  # this cell was fine-tuned before, with this config
                    result = json.loads((folder / "result.json").read_text())
                else:
                    result = train(config, folder, data_root=data_root, overwrite=True, progress=False)
                experiment.method.load_state_dict(load_tensors(folder / "model.safetensors"))
                with torch.no_grad():
                    logits = experiment.method.eval().predict(test_x)
                end = _kernel_stats(jacobian_features(model, inputs, parameters=names, **options), y_train, y_test,
                                    ridge)
                moved = kernel_distance(start["k_test"], end["k_test"])
                row.update({"finetune_acc": result["target_test/acc"],
                            "finetune_acc_sample": 100.0 * float((logits.argmax(1).numpy() == y_test).mean()),
                            "kernel_regression_acc_end": end["acc"], "alignment_end": end["alignment"],
                            "kernel_relative_change": moved["relative_change"],
                            "kernel_cosine_distance": moved["cosine_distance"], "finetuned_run": str(folder)})
            log(f"  {run_name(run_dir)} {init} k={k}: kernel regression {row['kernel_regression_acc']:.1f}%, "
                f"alignment {row['alignment']:.3f}"
                + (f", fine-tuned {row['finetune_acc']:.1f}%, kernel moved {row['kernel_cosine_distance']:.3f}"
                   if finetune else ""))
            rows.append(row)
    return rows


SUMMARY_KEYS = ("kernel_regression_acc", "alignment", "finetune_acc", "finetune_acc_sample",
                "kernel_regression_acc_end", "alignment_end", "kernel_relative_change", "kernel_cosine_distance")


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over runs of every number, per (pretraining, init, k)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        pretraining = row["pretraining"] if row["init"] == "pretrained" else "none"
        groups.setdefault((pretraining, row["init"], str(row["labels_per_class"])), []).append(row)
    summary = []
    for (pretraining, init, k), members in groups.items():
        entry: dict[str, Any] = {"pretraining": pretraining, "init": init,
                                 "labels_per_class": members[0]["labels_per_class"], "n_runs": len(members)}
        for key in SUMMARY_KEYS:
            values = [m[key] for m in members if key in m]
            if values:
                entry[key] = {"mean": statistics.fmean(values),
                              "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}
        summary.append(entry)
    return summary


def plot_ntk(summary: list[dict[str, Any]], path: Path) -> None:
    """Accuracy, alignment and kernel movement against k, one line per starting point (mean ± std over runs)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), dpi=120)
    curves = list(dict.fromkeys((s["pretraining"], s["init"]) for s in summary))
    ks = sorted({s["labels_per_class"] for s in summary if isinstance(s["labels_per_class"], int)})
    where = {str(k): k for k in ks}  # x position of each k; "all" to the right of the largest
    if any(s["labels_per_class"] == "all" for s in summary):
        where["all"] = 10 * max(ks, default=1)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    panels = [(axes[0], [("kernel_regression_acc", "-", "NTK regression"), ("finetune_acc", "--", "fine-tuned")],
               "target test accuracy (%)"),
              (axes[1], [("alignment", "-", "at start"), ("alignment_end", "--", "after fine-tuning")],
               "centred kernel-target alignment"),
              (axes[2], [("kernel_cosine_distance", "-", "1 - cos(K0, K1)")], "kernel movement")]
    for ax, keys, title in panels:
        for i, curve in enumerate(curves):
            entries = [s for s in summary if (s["pretraining"], s["init"]) == curve]
            positions = [where[str(s["labels_per_class"])] for s in entries]
            for key, style, what in keys:
                if not all(key in s for s in entries):
                    continue
                ax.errorbar(positions, [s[key]["mean"] for s in entries], yerr=[s[key]["std"] for s in entries],
                            ls=style, marker="o", ms=3, capsize=2,
                            color="#888888" if curve[1] == "random" else colours[i % 10],
                            label=f"{curve[0] if curve[1] == 'pretrained' else 'random init'}: {what}")
        ax.set_xscale("log")
        ax.set_xticks(list(where.values()), list(where))
        ax.minorticks_off()
        ax.set_xlabel("labels per class (k)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)


def _arguments(parser: argparse.ArgumentParser) -> None:
    run_arguments(parser, max_samples=1000)
    parser.add_argument("--labels-per-class", type=parse_labels, nargs="+", default=[1, 10, 100],
                        help="k labelled target samples per class for the kernel regression and fine-tuning")
    parser.add_argument("--target", metavar="DATASET",
                        help="transfer to this dataset instead of the runs' transfer: section")
    parser.add_argument("--no-finetune", dest="finetune", action="store_false",
                        help="skip fine-tuning (no fine-tuned accuracy, no kernel movement)")
    parser.add_argument("--projection", type=int, default=4096,
                        help="random projection of the Jacobians to this many dimensions "
                             "(0: exact, n x parameters floats)")
    parser.add_argument("--projection-kind", choices=["sketch", "gaussian"], default="sketch")
    parser.add_argument("--output", choices=["sum", "trace"], default="sum",
                        help="the network output whose NTK is taken: the sum of the logits, or the trace of the "
                             "per-class blocks")
    parser.add_argument("--parameters", nargs="+", metavar="PREFIX",
                        help="only parameters whose names start with these (e.g. head encoder.bottleneck); default all")
    parser.add_argument("--ridge", type=float, default=1e-3,
                        help="kernel ridge, relative to the mean diagonal of K_train")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per Jacobian batch")


def _run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    rows = []
    for run in args.runs:
        rows += ntk_report(run, labels=args.labels_per_class, data_root=args.data_root, max_samples=args.max_samples,
                           seed=args.seed, target=args.target, finetune=args.finetune, out_dir=out / "finetuned",
                           projection=args.projection or None, projection_kind=args.projection_kind, ridge=args.ridge,
                           output=args.output, parameters=args.parameters, batch_size=args.batch_size)
    summary = summarize(rows)
    settings = {"output": args.output, "projection": args.projection or None, "projection_kind": args.projection_kind,
                "ridge_relative": args.ridge, "parameters": args.parameters or "all trainable",
                "max_samples": args.max_samples, "seed": args.seed, "finetune": args.finetune, "target": args.target}
    write_json(out / "ntk.json", {"settings": settings, "rows": rows, "summary": summary})
    plot_ntk(summary, out / "ntk.png")
    fmt = lambda r, key, spec: format(r[key], spec) if key in r else "-"  # noqa: E731
    print(table([[run_name(r["run"]), r["init"], r["labels_per_class"], fmt(r, "kernel_regression_acc", ".1f"),
                  fmt(r, "alignment", ".3f"), fmt(r, "finetune_acc", ".1f"), fmt(r, "kernel_regression_acc_end", ".1f"),
                  fmt(r, "kernel_cosine_distance", ".3f"), fmt(r, "kernel_relative_change", ".3f")] for r in rows],
                ["run", "init", "k", "NTK acc %", "align", "fine-tuned %", "NTK acc end %", "1-cos", "rel change"]))
    print(f"\nwritten: {out / 'ntk.json'}, {out / 'ntk.png'} (alignment and accuracies use target test labels)")


COMMAND = Command("ntk", "empirical NTK of pretrained vs random init: kernel regression, alignment, kernel movement",
                  _arguments, _run)
