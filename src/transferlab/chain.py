"""Multi-hop transfer chains: ``transferlab chain configs/medical/<chain>.yaml`` trains stages in order (natural images
-> chest X-ray -> brain MRI), each starting from the previous stage's encoder.

A chain file::

    stages:
      - name: natural                  # the run folder <out>/<name>
        config: natural.yaml           # a run config, relative to the chain file
      - name: xray
        config: xray.yaml
        keep: encoder                  # what comes from the previous stage: encoder (default), none, or stage names
        freeze: [conv1, layer1]        # -> model.freeze (stages held fixed, BatchNorm statistics too)
        unfreeze: {layer1: 200}        # -> model.unfreeze (gradual unfreezing)
        iterations: 500                # -> train.iterations
        set: [optim.lr=0.01]           # any other --set overrides

Each stage is an ordinary run (its config, metrics, checkpoints and model in ``<out>/<name>``), with
``model.encoder_init`` pointing at the previous stage's folder (``model.init_stages`` when ``keep`` names stages).
Rerunning the command skips finished stages (after checking their config is unchanged) and resumes an unfinished
one from its last checkpoint, so a chain killed in stage 2 continues in stage 2 at the step it reached.
``chain.json`` and ``chain.md`` put every stage's final metrics side by side.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError

from .config import read_yaml
from .engine.checkpoint import atomic_write_json, atomic_write_text
from .errors import CheckpointError, ConfigError
from .validation import format_validation_error


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """The stage's run folder under the chain's output folder."""
    config: str
    """A run config (YAML), relative to the chain file."""
    keep: Literal["encoder", "none"] | list[str] = "encoder"
    """What this stage starts from: the previous stage's whole encoder, nothing (a fresh start: a from-scratch
    baseline inside a chain), or only the named stages (``model.init_stages``)."""
    freeze: NonNegativeInt | list[str] | None = None
    unfreeze: dict[str, NonNegativeInt] | None = None
    iterations: PositiveInt | None = None
    set: list[str] = Field(default_factory=list)


class ChainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stages: list[StageConfig] = Field(min_length=1)


def read_chain(path: str | Path) -> ChainConfig:
    raw = read_yaml(path)
    try:
        chain = ChainConfig(**raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {format_validation_error(exc, ChainConfig)}") from None
    names = [s.name for s in chain.stages]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{path}: stage names must differ (each is a run folder); repeated: {', '.join(repeated)}")
    if chain.stages[0].keep != "encoder" and chain.stages[0].keep != "none":
        raise ConfigError(f"{path}: the first stage has no previous stage to keep {chain.stages[0].keep} from")
    return chain


def stage_overrides(stage: StageConfig, previous: Path | None) -> list[str]:
    """The ``--set`` overrides that make ``stage``'s config a hop of the chain."""
    out: list[str] = []
    if previous is not None and stage.keep != "none":
        out.append(f"model.encoder_init={previous}")
        if isinstance(stage.keep, list):
            out.append(f"model.init_stages={json.dumps(stage.keep)}")
    if stage.freeze is not None:
        out.append(f"model.freeze={json.dumps(stage.freeze)}")
    if stage.unfreeze:
        out.append(f"model.unfreeze={json.dumps(stage.unfreeze)}")
    if stage.iterations is not None:
        out.append(f"train.iterations={stage.iterations}")
    return out + list(stage.set)


def stage_configs(path: str | Path, out_dir: str | Path, overrides: list[str] | None = None) -> list[tuple[StageConfig, Any]]:
    """Every stage with its validated run config (``overrides``, e.g. ``seed=1``, apply to every stage)."""
    from .experiment import load_config

    chain, base, out_dir = read_chain(path), Path(path).parent, Path(out_dir)
    configs, previous = [], None
    for stage in chain.stages:
        try:
            config = load_config(base / stage.config, [*(overrides or []), *stage_overrides(stage, previous)])
        except ConfigError as exc:
            raise ConfigError(f"chain stage '{stage.name}' ({stage.config}): {exc}") from None
        configs.append((stage, config))
        previous = out_dir / stage.name
    return configs


def _state(run: Path, config) -> str:
    """``done`` (finished with this config), ``partial`` (started: resume it) or ``new``."""
    from .experiment import same_config

    saved = run / "config.json"
    if not saved.is_file():
        return "new"
    if (run / "result.json").is_file():
        if not same_config(json.loads(saved.read_text()), config):
            raise CheckpointError(f"{run} holds a finished stage trained with a different config; the chain file or "
                                  f"its configs changed since. Use --overwrite to retrain the chain, or another --out")
        return "done"
    return "partial"


def run_chain(path: str | Path, out_dir: str | Path, *, overrides: list[str] | None = None,
              data_root: str | Path | None = None, overwrite: bool = False, progress: bool = True,
              report: Callable[[str], None] = lambda line: None,
              stop: tuple[str, int] | None = None) -> dict[str, Any]:
    """Train the chain's stages in order into ``out_dir/<stage>``; returns (and writes) the side-by-side summary.
    ``stop=(stage, step)`` ends the chain inside ``stage`` at ``step`` with a resumable checkpoint (what a crash
    leaves; used by the tests)."""
    import shutil

    from .experiment import train

    out_dir = Path(out_dir)
    configs = stage_configs(path, out_dir, overrides)
    if overwrite:
        for stage, _ in configs:
            if (out_dir / stage.name).exists():
                shutil.rmtree(out_dir / stage.name)
    rows = []
    for i, (stage, config) in enumerate(configs):
        run = out_dir / stage.name
        state = _state(run, config)
        if state == "done":
            report(f"[{i + 1}/{len(configs)}] {stage.name}: finished earlier, kept ({run})")
        else:
            report(f"[{i + 1}/{len(configs)}] {stage.name}: {'resuming' if state == 'partial' else 'training'} "
                   f"({config.data.source.name}/{config.data.source.part}, {config.train.iterations} iterations)")
            stop_at = stop[1] if stop is not None and stop[0] == stage.name else None
            train(config, run, data_root=data_root, resume=state == "partial", progress=progress, stop_at=stop_at)
            if stop_at is not None and stop_at < config.train.iterations:
                report(f"stopped in {stage.name} at step {stop_at}; rerun the command to resume there")
                return {"stopped": {"stage": stage.name, "step": stop_at}}
        rows.append(stage_row(stage, config, run))
    summary = {"chain": str(path), "stages": rows}
    atomic_write_json(out_dir / "chain.json", summary)
    atomic_write_text(out_dir / "chain.md", chain_table(rows) + "\n")
    return summary


def stage_row(stage: StageConfig, config, run: Path) -> dict[str, Any]:
    result = json.loads((run / "result.json").read_text())
    metrics = {k: v for k, v in result.items() if "/" in k and isinstance(v, (int, float))}
    return {"stage": stage.name, "run": str(run), "data": f"{config.data.source.name}/{config.data.source.part}",
            "test_set": result.get("test_set"), "keep": stage.keep, "freeze": config.model.freeze,
            "iterations": config.train.iterations, "parameters": result.get("parameters"), "metrics": metrics,
            "train_seconds": result.get("train_seconds")}


def chain_table(rows: list[dict[str, Any]]) -> str:
    """One row per stage: its data, what it kept and froze, trainable parameters, then its final metrics."""
    from .reports.common import table

    keys = sorted({k for r in rows for k in r["metrics"]})
    body = []
    for r in rows:
        keep = r["keep"] if isinstance(r["keep"], str) else "+".join(r["keep"])
        freeze = r["freeze"] if r["freeze"] is None or isinstance(r["freeze"], int) else "+".join(r["freeze"]) or "-"
        params = (r["parameters"] or {}).get("trainable")
        body.append([r["stage"], r["data"], keep if r is not rows[0] else "-", str(freeze or "-"),
                     f"{params:,}" if params is not None else "?",
                     *(f"{r['metrics'][k]:.4g}" if k in r["metrics"] else "" for k in keys)])
    return table(body, ["stage", "trained on", "kept", "frozen", "trainable params", *keys])
