"""``transferlab demo``: source-only vs an adaptation method on the embedded digits -> digits_m shift (no download).

The config ships inside the package (``transferlab/configs/embedded_digits.yaml``), so the demo runs from any
install; ``configs/digits/digits_digits_m_<method>.yaml`` build on the same file. The packaged config names the
adaptation method the demo shows (``method.name``) with all its settings; the baseline is the same config with
the method replaced by ``source_only`` (it keeps the settings every method has, such as ``bn_mode``).

:func:`run_demo` trains both for each seed, keeps each run in ``<out>/runs/<method>-seed<k>``, and writes
``results.md`` / ``results.json`` (target accuracy per seed, gain) and ``tsne.png``: t-SNE of source and target
test features before adaptation (the source-only model) and after it (the adapted model), seed 0's runs.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from .config import Config, apply_overrides, read_yaml
from .engine.checkpoint import atomic_write_json, atomic_write_text
from .experiment import load_config, train
from .methods import METHODS

EMBEDDED_CONFIG = Path(str(resources.files("transferlab") / "configs" / "embedded_digits.yaml"))
BASELINE = "source_only"


def adaptation_method(overrides: Sequence[str] = ()) -> str:
    """The adaptation method the demo shows: the packaged config's ``method.name`` (after ``overrides``)."""
    return str(apply_overrides(read_yaml(EMBEDDED_CONFIG), list(overrides))["method"]["name"])


def demo_config(method: str | None = None, iterations: int | None = None, seed: int = 0,
                overrides: Sequence[str] = ()) -> Config:
    """The packaged config as the demo runs it for ``method`` (default: the config's adaptation method).

    For another method (the ``source_only`` baseline) the method section keeps only the settings that method
    declares too (``bn_mode``), so the adaptation method's own hyper-parameters are not carried over."""
    raw = apply_overrides(read_yaml(EMBEDDED_CONFIG), list(overrides))
    if method is not None and method != raw["method"].get("name"):
        fields = METHODS.get(method).Config.model_fields
        raw["method"] = {**{k: v for k, v in raw["method"].items() if k in fields}, "name": method}
    extra = [f"seed={seed}"] + ([f"train.iterations={iterations}"] if iterations is not None else [])
    return load_config(raw=apply_overrides(raw, extra))


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return _fmt(values[0])
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"


def results_table(summary: dict[str, Any]) -> str:
    """The Markdown table of a demo: one row per method (target accuracy per seed, mean ± std, train seconds per
    run) and one row with the gain of the adaptation method over source-only per seed."""
    seeds = summary["seeds"]
    methods = [BASELINE, summary["adaptation"]]
    head = (["method"] + [f"seed {s}" for s in seeds] + (["mean ± std"] if len(seeds) > 1 else [])
            + ["train s / run"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in methods:
        accs = summary["accuracy"][method]
        row = [method] + [_fmt(a) for a in accs] + ([_mean_std(accs)] if len(seeds) > 1 else [])
        row.append(f"{statistics.fmean(summary['train_seconds'][method]):.1f}")
        lines.append("| " + " | ".join(row) + " |")
    gains = summary["gain"]
    row = [f"gain ({summary['adaptation']} − source-only)"] + [f"{g:+.1f}" for g in gains]
    row += ([f"{statistics.fmean(gains):+.1f} ± {statistics.stdev(gains):.1f}"] if len(seeds) > 1 else []) + [""]
    lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def results_markdown(summary: dict[str, Any]) -> str:
    """``results.md``: what ran, the table, and the t-SNE picture next to it."""
    seeds = summary["seeds"]
    text = [
        "# transferlab demo",
        "",
        f"{summary['task']}, target test set {summary['test_set']} ({summary['n_test']} images); "
        f"{summary['iterations']} iterations per run, seed{'s' if len(seeds) > 1 else ''} "
        f"{', '.join(map(str, seeds))}; {summary['device']}. Target accuracy % of the final model "
        "(no model selection).",
        "",
        results_table(summary),
        "",
    ]
    if summary.get("tsne"):
        text += [
            f"t-SNE of source and target test features (seed {seeds[0]}), before adaptation (top: the source-only "
            f"model) and after (bottom: {summary['adaptation']}); left coloured by domain, right by class:",
            "",
            f"![t-SNE before and after adaptation]({summary['tsne']})",
            "",
        ]
    return "\n".join(text)


def _before_after(top: Path, bottom: Path, path: Path, labels: tuple[str, str]) -> None:
    """One picture: ``top`` above ``bottom`` (two PNGs that :func:`~transferlab.reports.features.feature_map`
    wrote), each under its label, padded with white to one width."""
    import numpy as np

    from .reports.common import pyplot, save_figure

    plt = pyplot()
    images = [plt.imread(top)[..., :3], plt.imread(bottom)[..., :3]]
    width = max(image.shape[1] for image in images)
    band = 36  # pixels above each picture for its label
    images = [np.pad(image, ((band, 0), (0, width - image.shape[1]), (0, 0)), constant_values=1.0)
              for image in images]
    stacked = np.concatenate(images, axis=0)
    height = stacked.shape[0]
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    fig.figimage(stacked, 0, 0)
    y = height
    for image, label in zip(images, labels):
        fig.text(0.5, (y - band / 2) / height, label, ha="center", va="center", fontsize=13, weight="bold")
        y -= image.shape[0]
    save_figure(fig, path)


def check_demo(seeds: Sequence[int], adaptation: str) -> None:
    """Refuse a demo without seeds, or one whose adaptation method is the baseline itself."""
    from .errors import ConfigError

    if not seeds:
        raise ConfigError("the demo needs at least one seed (--seeds 1 or more)")
    if adaptation == BASELINE:
        raise ConfigError(f"the demo compares an adaptation method with {BASELINE}, but method.name is {BASELINE}; "
                          f"set another method (e.g. --set method.name=dann)")


def run_demo(out: str | Path, *, seeds: Sequence[int] = (0,), iterations: int | None = None,
             overrides: Sequence[str] = (), tsne: bool = True, progress: bool = True,
             report: Callable[[str], None] = print) -> dict[str, Any]:
    """Train source-only and the packaged adaptation method for each seed, then write ``results.md``,
    ``results.json`` and (``tsne``) ``tsne.png`` into ``out``; returns the summary written to results.json.

    Runs are kept in ``<out>/runs/<method>-seed<k>``; a run folder left there by an earlier demo is replaced."""
    out = Path(out)
    adaptation = adaptation_method(overrides)
    check_demo(seeds, adaptation)
    summary: dict[str, Any] = {"adaptation": adaptation, "seeds": list(seeds), "accuracy": {}, "train_seconds": {},
                               "runs": {}}
    for method in (BASELINE, adaptation):
        for key in ("accuracy", "train_seconds", "runs"):
            summary[key][method] = []
    for seed in seeds:
        for method in (BASELINE, adaptation):
            config = demo_config(method, iterations, seed, overrides)
            run_dir = out / "runs" / f"{method}-seed{seed}"
            result = train(config, run_dir, overwrite=(run_dir / "config.json").is_file(), progress=progress)
            summary["accuracy"][method].append(result["target_test/acc"])
            summary["train_seconds"][method].append(result["train_seconds"])
            summary["runs"][method].append(str(run_dir))
            summary.update(task=result["task"], test_set=result["test_set"], device=result["device"],
                           iterations=config.train.iterations)
            report(f"  seed {seed}  {method:<12} target accuracy {result['target_test/acc']:.1f}%  "
                   f"({result['train_seconds']:.1f} s)")
    summary["gain"] = [a - b for a, b in zip(summary["accuracy"][adaptation], summary["accuracy"][BASELINE])]
    summary["n_test"] = _test_size(demo_config(adaptation, iterations, seeds[0], overrides))
    summary["date"] = dt.date.today().isoformat()
    if tsne:
        from .reports.features import feature_map

        pictures = []
        for method in (BASELINE, adaptation):
            picture = out / f"tsne_{method}.png"
            feature_map(summary["runs"][method][0], picture, seed=seeds[0])
            pictures.append(picture)
        _before_after(*pictures, out / "tsne.png", (f"before adaptation: {BASELINE}", f"after adaptation: {adaptation}"))
        summary["tsne"] = "tsne.png"
    else:  # pictures of an earlier demo in this folder would not show these runs
        for stale in [out / "tsne.png"] + [out / f"tsne_{m}.png" for m in (BASELINE, adaptation)]:
            stale.unlink(missing_ok=True)
    atomic_write_json(out / "results.json", summary)
    atomic_write_text(out / "results.md", results_markdown(summary) + "\n")
    return summary


def _test_size(config: Config) -> int:
    from .data import load
    from .experiment import default_test

    test = config.data.test or default_test(config.data.target, config.data.root)
    return len(load(test.name, test.part, config.data.root))
