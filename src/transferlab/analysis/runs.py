"""The diagnostics applied to saved runs: what ``transferlab analyze`` computes.

* :func:`divergence_report` — the Ben-David terms of a trained model: source error, target error,
  proxy A-distance of its features, and the joint error λ (needs target labels: analysis only).
  Compare a source-only run with adapted runs to see whether adaptation aligned the domains.
* :func:`feature_map` — t-SNE of source and target features, coloured by domain and by class.
* :func:`score_candidates` — transferability scores of candidate pretrained encoders on a target
  task, and their rank correlation with the accuracy fine-tuning actually reached.
* :func:`landscape_report` — loss along the line from initialisation to the trained weights, a
  filter-normalised 2-D slice, and sharpness.

Features are the ones the classifier sees (``Method.representation``), in eval mode, from at most
``max_samples`` samples per set drawn with a fixed seed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data import ArrayDataset, iterate_batches
from ..errors import TransferlabError

# --- extraction ----------------------------------------------------------------------------------


def sample(dataset: ArrayDataset, max_samples: int, seed: int = 0) -> ArrayDataset:
    """At most ``max_samples`` samples of ``dataset``, drawn without replacement by ``seed``."""
    if len(dataset) <= max_samples:
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:max_samples]
    return dataset.subset(torch.sort(order).values)


@torch.no_grad()
def extract(experiment, dataset: ArrayDataset, domain: str = "source", batch_size: int = 512) -> dict[str, np.ndarray]:
    """Features (``Method.representation``), labels and, when the method classifies, logits."""
    method = experiment.method
    was_training = method.training
    method.eval()
    device = next(method.parameters()).device
    features, logits, labels = [], [], []
    try:
        for batch in iterate_batches(dataset, batch_size, device=device, transform=experiment.transform):
            f = method.representation(batch.x, domain)
            features.append(f.float().cpu())
            if method.classifies():
                logits.append(method.predict_on(batch.x, domain).float().cpu())
            if batch.y is not None:
                labels.append(batch.y.cpu())
    finally:
        method.train(was_training)
    return {"features": torch.cat(features).numpy(), "labels": torch.cat(labels).numpy() if labels else None,
            "logits": torch.cat(logits).numpy() if logits else None}


def _source_eval_set(experiment, data_root) -> ArrayDataset:
    """Labelled held-out source data: the source dataset's ``test`` part when it has one, else its training set."""
    from .. import data as tl_data
    from ..experiment import load_domain

    c = experiment.config.data.source
    info = tl_data.DATASETS.get(c.name)
    if "test" in info.parts and c.part != "test":
        return load_domain(c.model_copy(update={"part": "test", "labels_per_class": None}), data_root,
                           experiment.config.seed)
    return experiment.source


# --- divergence --------------------------------------------------------------------------------


def divergence_report(run_dir: str | Path, *, data_root: str | Path | None = None, max_samples: int = 2000,
                      classifier: str = "linear", seed: int = 0) -> dict[str, Any]:
    """Ben-David terms of a domain adaptation run (errors in %, A-distance in [0, 2], λ in [0, 2])."""
    from ..experiment import load_run
    from .divergence import joint_error, proxy_a_distance

    experiment = load_run(run_dir, data_root)
    if experiment.test is None or not experiment.method.classifies():
        raise TransferlabError(f"{run_dir} has no classifier and target test set; the divergence report needs a "
                               f"domain adaptation (or source-only) run")
    source = extract(experiment, sample(_source_eval_set(experiment, data_root), max_samples, seed), "source")
    target = extract(experiment, sample(experiment.test, max_samples, seed), "target")
    error = lambda d: 100.0 * float((d["logits"].argmax(1) != d["labels"]).mean())  # noqa: E731
    pad = proxy_a_distance(source["features"], target["features"], classifier=classifier, seed=seed)
    lam = joint_error(source["features"], source["labels"], target["features"], target["labels"], seed=seed)
    c = experiment.config
    return {
        "run": str(run_dir), "method": c.method_config().name, "seed": c.seed,
        "task": f"{c.data.source.name}->{c.data.target.name if c.data.target else experiment.test.name}",
        "source_error": error(source), "target_error": error(target),
        "a_distance": pad["a_distance"], "a_distance_raw": pad["a_distance_raw"], "domain_error": pad["domain_error"],
        "lambda": lam["lambda"], "lambda_source_error": lam["source_error"], "lambda_target_error": lam["target_error"],
        "n_source": len(source["features"]), "n_target": len(target["features"]), "classifier": classifier,
    }


def plot_divergence(reports: list[dict[str, Any]], path: Path) -> None:
    """Bars of A-distance, λ and target error per method (mean ± std over the runs given)."""
    plt = _pyplot()
    methods = list(dict.fromkeys(r["method"] for r in reports))
    keys = [("a_distance", "proxy A-distance"), ("lambda", "joint error λ"), ("target_error", "target error (%)")]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), dpi=120)
    for ax, (key, title) in zip(axes, keys):
        values = [[r[key] for r in reports if r["method"] == m] for m in methods]
        ax.bar(range(len(methods)), [np.mean(v) for v in values], yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in values],
               capsize=3, color=["#888888" if m == "source_only" else "#3b75af" for m in methods])
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(reports[0]["task"], fontsize=9)
    fig.tight_layout()
    _save(fig, path)


# --- feature pictures --------------------------------------------------------------------------


def feature_map(run_dir: str | Path, path: Path, *, data_root: str | Path | None = None, max_samples: int = 1000,
                seed: int = 0) -> dict[str, Any]:
    """t-SNE of source and target test features of a run; left coloured by domain, right by class."""
    from sklearn.manifold import TSNE

    from ..experiment import load_run

    experiment = load_run(run_dir, data_root)
    source = extract(experiment, sample(_source_eval_set(experiment, data_root), max_samples, seed), "source")
    target = extract(experiment, sample(experiment.test, max_samples, seed), "target")
    features = np.concatenate([source["features"], target["features"]])
    embedded = TSNE(n_components=2, init="pca", random_state=seed, perplexity=30).fit_transform(features)
    n_s = len(source["features"])
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4.2), dpi=120)
    a.scatter(*embedded[:n_s].T, s=3, c="#3b75af", label=f"source ({experiment.config.data.source.name})", alpha=0.6)
    a.scatter(*embedded[n_s:].T, s=3, c="#d9534f", label=f"target ({experiment.test.name})", alpha=0.6)
    a.legend(fontsize=8, markerscale=4)
    a.set_title("by domain", fontsize=9)
    labels = np.concatenate([source["labels"], target["labels"]])
    b.scatter(*embedded.T, s=3, c=labels, cmap="tab10", alpha=0.6)
    b.set_title("by class", fontsize=9)
    for ax in (a, b):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{'/'.join(Path(run_dir).parts[-2:])}: {experiment.config.method_config().name}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return {"run": str(run_dir), "plot": str(path), "n_source": n_s, "n_target": len(features) - n_s}


# --- transferability scores ----------------------------------------------------------------------


def score_candidates(runs: Sequence[str | Path], accuracies: Sequence[float], *, data_root: str | Path | None = None,
                     max_samples: int = 2000, seed: int = 0, target: str | None = None) -> dict[str, Any]:
    """Score each candidate run on one target task (the runs' common ``transfer:`` section, or the
    dataset ``target``: its labelled training set), and correlate every score with the fine-tuned
    ``accuracies``.

    LogME, H-score and TransRate use the encoder's features, so they score any candidate. LEEP and NCE
    use the candidate's own source classifier (its predictions over the source classes on the target
    images), so they are computed only when every candidate is a classifier (e.g. supervised source
    models); self-supervised encoders have none.
    """
    from ..experiment import build, load_run
    from ..protocol import downstream, read_run_config, transfer_config
    from .scores import h_score, leep, logme, nce, transrate, weighted_kendall_tau

    if len(runs) != len(accuracies) or len(runs) < 3:
        raise TransferlabError(f"need one accuracy per candidate and at least 3 candidates; got {len(runs)} runs and "
                               f"{len(accuracies)} accuracies")
    from scipy.stats import kendalltau

    configs = [read_run_config(run) for run in runs]
    tasks = {json.dumps(downstream(c, target, run).train.model_dump(mode="json"), sort_keys=True)
             for run, c in zip(runs, configs)}
    if len(tasks) != 1:
        raise TransferlabError("the candidates transfer to different tasks (their transfer.train differs); scores "
                               "are compared on one target task (or give --target)")
    rows = []
    for run, pre, accuracy in zip(runs, configs, accuracies):
        config = transfer_config(run, "finetune", "all", seed, data_root=data_root, target=target)
        experiment = build(config, data_root)  # the candidate's encoder on the target task's data
        target_sample = sample(experiment.source, max_samples, seed)
        data = extract(experiment, target_sample)
        row = {"run": str(run), "pretraining": pre.method_config().name, "source": pre.data.source.name,
               "finetuned_acc": accuracy,
               "logme": logme(data["features"], data["labels"]), "h_score": h_score(data["features"], data["labels"]),
               "transrate": transrate(data["features"], data["labels"])}
        source_model = load_run(run, data_root).method
        if source_model.classifies():  # the source classifier's predictions, on the target images
            logits = extract(SimpleNamespace(method=source_model, transform=experiment.transform), target_sample)["logits"]
            probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
            row["leep"] = leep(probs, data["labels"])
            row["nce"] = nce(probs.argmax(axis=1), data["labels"])
        rows.append(row)
    keys = ["logme", "h_score", "transrate"] + [k for k in ("leep", "nce") if all(k in r for r in rows)]
    correlation = {}
    for key in keys:
        scores = [r[key] for r in rows]
        correlation[key] = {"weighted_kendall_tau": weighted_kendall_tau(scores, accuracies),
                            "kendall_tau": float(kendalltau(scores, accuracies).statistic)}
    return {"target": json.loads(next(iter(tasks)))["name"], "candidates": rows, "correlation": correlation,
            "n_candidates": len(rows)}


# --- negative transfer ----------------------------------------------------------------------------


def transfer_check(runs: Sequence[str | Path], *, labels_per_class: int = 10, seeds: Sequence[int] = (0, 1, 2),
                   data_root: str | Path | None = None, out_dir: Path | None = None, log=print) -> dict[str, Any]:
    """Adapted vs source-only vs target-scratch on one task. ``runs`` are finished domain adaptation
    runs of one task (any methods, including ``source_only``); target-scratch trains the same model
    with ``supervised`` on ``labels_per_class`` labelled target samples per class (the cost of
    labelling a few target images instead of transferring), one run per seed. Flags negative transfer:
    a method below source-only, or source-only below target-scratch, by more than the two standard
    deviations combined."""
    import statistics

    from ..config import validate
    from ..experiment import train
    from ..protocol import read_run_config

    def summary(values: list[float]) -> dict[str, Any]:
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values}

    by_method: dict[str, list[float]] = {}
    tasks = set()
    for run in runs:
        config = read_run_config(run)
        if config.data.target is None:
            raise TransferlabError(f"{run} is not a domain adaptation run (no data.target)")
        tasks.add((config.data.source.name, config.data.target.name))
        result = json.loads((Path(run) / "result.json").read_text())
        by_method.setdefault(config.method_config().name, []).append(result["target_test/acc"])
    if len(tasks) != 1:
        raise TransferlabError(f"the runs belong to different tasks {sorted(tasks)}; compare one task at a time")
    if "source_only" not in by_method:
        raise TransferlabError("include the task's source_only runs: negative transfer is judged against them")
    reference = read_run_config(runs[0]).to_dict()
    scratch = []
    for seed in seeds:
        raw = {**reference, "seed": seed, "method": {"name": "supervised"}}
        target = reference["data"]["target"]
        raw["data"] = {**reference["data"], "source": {**target, "labels_per_class": labels_per_class},
                       "target": None, "test": reference["data"]["test"] or {**target, "part": "test"}}
        raw["train"] = {**reference["train"], "iterations": 500, "eval_every": 0, "checkpoint_every": 0}
        raw["data"]["batch_size"] = min(reference["data"]["batch_size"], 64)
        out = out_dir / f"target_scratch_seed{seed}" if out_dir is not None else None
        result = train(validate(raw), out, data_root=data_root, overwrite=True, progress=False)
        log(f"  target-scratch ({labels_per_class} labels/class) seed {seed}: {result['target_test/acc']:.1f}%")
        scratch.append(result["target_test/acc"])
    rows = {name: summary(values) for name, values in by_method.items()}
    rows[f"target_scratch_{labels_per_class}"] = summary(scratch)
    base, own = rows["source_only"], rows[f"target_scratch_{labels_per_class}"]
    for name, row in rows.items():
        if name not in ("source_only", f"target_scratch_{labels_per_class}"):
            row["gain_vs_source_only"] = row["mean"] - base["mean"]
            row["negative_transfer"] = row["gain_vs_source_only"] < -(row["std"] + base["std"])
    base["gain_vs_target_scratch"] = base["mean"] - own["mean"]
    base["negative_transfer"] = base["gain_vs_target_scratch"] < -(base["std"] + own["std"])
    (source, target), = tasks
    return {"task": f"{source}->{target}", "labels_per_class": labels_per_class, "methods": rows,
            "note": "target-scratch uses target labels: it is the alternative to transfer, not a method"}


# --- representation similarity ----------------------------------------------------------------


@torch.no_grad()
def layer_activations(experiment, dataset: ArrayDataset, domain: str = "target") -> dict[str, np.ndarray]:
    """Each encoder layer's output (flattened per sample) on ``dataset``; layers as in
    :func:`transferlab.models.layers.encoder_layers`, named by their last module."""
    from ..models.layers import encoder_layers

    method = experiment.method
    encoder = method.encoder_for(domain)
    names = [layer[-1] for layer in encoder_layers(encoder)]
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    hooks = [encoder.get_submodule(name).register_forward_hook(
        lambda module, args, out, name=name: outputs[name].append(out.detach().float().flatten(1).cpu()))
        for name in names]
    was_training = method.training
    method.eval()
    try:
        for batch in iterate_batches(dataset, 512, device=next(method.parameters()).device, transform=experiment.transform):
            encoder(batch.x)
    finally:
        for hook in hooks:
            hook.remove()
        method.train(was_training)
    return {name: torch.cat(parts).numpy() for name, parts in outputs.items()}


def cka_report(run_a: str | Path, run_b: str | Path, *, data_root: str | Path | None = None, max_samples: int = 500,
               seed: int = 0) -> dict[str, Any]:
    """Linear CKA between every layer of run A's encoder and every layer of run B's, on the same
    inputs: run A's test set (its target domain's test part). Shows which layers adaptation or
    fine-tuning changed (low CKA on the diagonal) and which stayed (near 1)."""
    from ..experiment import load_run
    from .similarity import linear_cka

    a, b = load_run(run_a, data_root), load_run(run_b, data_root)
    data = a.test if a.test is not None else a.source
    data = sample(data, max_samples, seed)
    acts_a, acts_b = layer_activations(a, data), layer_activations(b, data)
    matrix = [[linear_cka(xa, xb) for xb in acts_b.values()] for xa in acts_a.values()]
    return {"run_a": str(run_a), "run_b": str(run_b), "layers_a": list(acts_a), "layers_b": list(acts_b),
            "cka": matrix, "n_samples": len(data), "data": f"{data.name}/{data.part}"}


def plot_cka(report: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    m = np.asarray(report["cka"])
    fig, ax = plt.subplots(figsize=(1.5 + 0.7 * m.shape[1], 1.2 + 0.6 * m.shape[0]), dpi=120)
    image = ax.imshow(m, vmin=0, vmax=1, cmap="magma")
    ax.set_xticks(range(m.shape[1]), report["layers_b"], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(m.shape[0]), report["layers_a"], fontsize=7)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white" if m[i, j] < 0.6 else "black")
    ax.set_ylabel("/".join(Path(report["run_a"]).parts[-2:]), fontsize=8)
    ax.set_xlabel("/".join(Path(report["run_b"]).parts[-2:]), fontsize=8)
    fig.colorbar(image, ax=ax, label="linear CKA")
    fig.tight_layout()
    _save(fig, path)


# --- Task2Vec --------------------------------------------------------------------------------------


def _fit_head(features: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int = 300) -> torch.nn.Linear:
    """A linear classifier on fixed features (full-batch Adam): Task2Vec's probe head for one task."""
    torch.manual_seed(0)
    head = torch.nn.Linear(features.shape[1], num_classes)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.01, weight_decay=1e-4)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(head(features), labels).backward()
        optimizer.step()
    return head


def task2vec_report(probe_run: str | Path, tasks: Sequence[str], *, data_root: str | Path | None = None,
                    max_samples: int = 500, seed: int = 0) -> dict[str, Any]:
    """Task2Vec (Achille et al., ICCV 2019) embeddings of ``tasks`` ("dataset" or "dataset:part") with
    the encoder of ``probe_run`` as the fixed probe network: per task, a linear head is fitted on
    the frozen features, then the diagonal Fisher of the encoder's weights (exact expectation over
    the head's predictive distribution) is averaged per filter, as in the paper; returns the
    embeddings' pairwise normalised-cosine distances. Inputs are preprocessed as the probe was
    trained (size, channels), so any image task can be compared."""
    from .. import data as tl_data
    from ..experiment import build
    from ..protocol import read_run_config
    from .task2vec import distance_matrix, fisher_diagonal

    config = read_run_config(probe_run)
    raw = config.to_dict()
    raw["model"]["encoder_init"] = str(Path(probe_run).resolve())
    raw["method"] = {"name": "supervised"}
    from ..config import validate

    probe = build(validate(raw), data_root)
    encoder = probe.method.encoder.eval()
    embeddings, info = {}, []
    for spec in tasks:
        name, _, part = spec.partition(":")
        dataset = sample(tl_data.load(name, part or "train", data_root or config.data.root), max_samples, seed)
        x = probe.transform(dataset.x)
        with torch.no_grad():
            features = encoder(x)
        head = _fit_head(features, dataset.y, dataset.num_classes)
        model = torch.nn.Sequential(encoder, head)
        names = [f"0.{n}" for n, _ in encoder.named_parameters()]
        fisher = fisher_diagonal(model, x.contiguous(), parameters=names, exact=True)
        per_filter = [f.mean(dim=tuple(range(1, f.ndim))) if f.ndim > 1 else f for _, f in sorted(fisher.items())]
        embeddings[spec] = torch.cat(per_filter)
        with torch.no_grad():
            accuracy = 100.0 * float((head(features).argmax(1) == dataset.y).float().mean())
        info.append({"task": spec, "n": len(dataset), "classes": dataset.num_classes, "probe_train_acc": accuracy})
    names, distances = distance_matrix(embeddings)
    return {"probe_run": str(probe_run), "tasks": info, "names": names, "distances": distances.tolist()}


def distance_vs_gain(report: dict[str, Any], grids: Sequence[str | Path], labels_per_class: int | str = 10,
                     strategy: str = "finetune") -> dict[str, Any]:
    """Does Task2Vec distance predict transfer? Pairs each (source task, target task) of ``grids`` (folders
    of ``transferlab grid`` runs whose pretrained models were trained on different source datasets) with
    its measured gain over training from scratch (``strategy`` at ``labels_per_class``, mean over seeds)
    and the two tasks' distance in ``report`` (:func:`task2vec_report`, which must hold both tasks).
    Returns the pairs and the rank correlations (Spearman, Kendall): negative means that closer tasks
    transfer better, as Achille et al. report."""
    from scipy.stats import kendalltau, spearmanr

    from ..protocol import read_run_config

    index = {name: i for i, name in enumerate(report["names"])}
    pairs = []
    for grid in grids:
        path = Path(grid) / "results.json"
        if not path.is_file():
            raise TransferlabError(f"{grid} has no results.json: run `transferlab grid ... --out {grid}` first")
        for record in json.loads(path.read_text()):
            if not record["method"].endswith(f"+{strategy}") or str(record["labels_per_class"]) != str(labels_per_class) \
                    or "gain_vs_scratch" not in record:
                continue
            runs = next(iter(record["pretraining"].values()))
            domain = read_run_config(runs[0]).data.source
            source = domain.name if domain.part == "train" else f"{domain.name}:{domain.part}"
            target = record["target"]
            missing = [t for t in (source, target) if t not in index]
            if missing:
                raise TransferlabError(f"the Task2Vec report has no task {missing} (it has {', '.join(report['names'])}); "
                                       f"add them to --tasks")
            pairs.append({"source": source, "target": target, "distance": report["distances"][index[source]][index[target]],
                          "gain": record["gain_vs_scratch"], "accuracy": record["mean"], "std": record["std"],
                          "negative_transfer": record.get("negative_transfer", False)})
    if len(pairs) < 3:
        raise TransferlabError(f"found {len(pairs)} (source, target) pairs with a {strategy} gain at k={labels_per_class} "
                               f"in {', '.join(map(str, grids))}; need at least 3")
    d, g = [p["distance"] for p in pairs], [p["gain"] for p in pairs]
    per_target = {}
    for target in dict.fromkeys(p["target"] for p in pairs):
        members = [p for p in pairs if p["target"] == target]
        if len(members) >= 3:
            per_target[target] = float(spearmanr([p["distance"] for p in members], [p["gain"] for p in members]).statistic)
    return {"labels_per_class": labels_per_class, "strategy": strategy, "pairs": pairs,
            "spearman": float(spearmanr(d, g).statistic), "kendall_tau": float(kendalltau(d, g).statistic),
            "spearman_per_target": per_target, "n_pairs": len(pairs)}


def plot_distance_vs_gain(result: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    targets = list(dict.fromkeys(p["target"] for p in result["pairs"]))
    for target in targets:
        members = [p for p in result["pairs"] if p["target"] == target]
        ax.errorbar([p["distance"] for p in members], [p["gain"] for p in members], yerr=[p["std"] for p in members],
                    fmt="o", capsize=2, label=f"target {target}")
        for p in members:
            ax.annotate(p["source"].split(":")[-1], (p["distance"], p["gain"]), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("Task2Vec distance (source, target)")
    ax.set_ylabel(f"gain over scratch, k={result['labels_per_class']} (points)")
    ax.set_title(f"Spearman {result['spearman']:+.2f}, Kendall {result['kendall_tau']:+.2f} ({result['n_pairs']} pairs)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def plot_distance_matrix(report: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    names, d = report["names"], np.asarray(report["distances"])
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(names), 0.6 + 0.6 * len(names)), dpi=120)
    image = ax.imshow(d, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{d[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if d[i, j] < d.max() * 0.6 else "black")
    fig.colorbar(image, ax=ax, label="Task2Vec distance")
    ax.set_title(f"probe: {Path(report['probe_run']).name}", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


# --- loss landscape ----------------------------------------------------------------------------


def landscape_report(run_dir: str | Path, path: Path, *, data_root: str | Path | None = None, max_samples: int = 1000,
                     steps: int = 11, span: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """Cross-entropy on (a sample of) the training set along θ(α) = (1−α)θ_init + αθ_final, on a 2-D
    filter-normalised slice around θ_final, and the sharpness at radius 0.1. θ_init is the run's
    initialisation rebuilt from its config (pretrained weights included, via ``model.encoder_init``)."""
    from ..experiment import build, load_run
    from .landscape import interpolate, sharpness, slice_2d

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
    plt = _pyplot()
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
    _save(fig, path)
    return {"run": str(run_dir), "alphas": alphas.tolist(), "interpolation_loss": line, "sharpness": sharp,
            "slice_center_loss": float(grid["losses"][steps // 2, steps // 2]), "slice_min": float(grid["losses"].min()),
            "slice_max": float(grid["losses"].max()), "plot": str(path)}


# --- helpers -------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp)
    _pyplot().close(fig)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    from ..engine.checkpoint import atomic_write_json

    atomic_write_json(Path(path), json.loads(json.dumps(obj, default=float)))
