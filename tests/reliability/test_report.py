"""``transferlab analyze report`` (issue #15, item 16): one self-contained HTML page and a Markdown page with PNGs,
per run and per comparison, whose numbers are the runs' own."""

from __future__ import annotations

import base64
import json
import re

from conftest import tiny_config
from transferlab.cli import main
from transferlab.experiment import resolved_config, train


def _run(tmp_path, method, seed=0):
    config = tiny_config(method, iterations=10, train={"eval_every": 5, "log_every": 5})
    config = config.model_copy(update={"seed": seed})
    out = tmp_path / f"{method}{seed}"
    train(config, out, progress=False)
    return out


def test_report_of_a_comparison_shows_each_runs_numbers_and_pictures(tmp_path, capsys):
    runs = [_run(tmp_path, "source_only"), _run(tmp_path, "dann")]
    code = main(["analyze", "report", *map(str, runs), "--out", str(tmp_path / "rep"), "--max-samples", "150"])
    assert code in (0, None)
    page = (tmp_path / "rep" / "report.html").read_text()
    markdown = (tmp_path / "rep" / "report.md").read_text()
    for run in runs:
        result = json.loads((run / "result.json").read_text())
        assert f"{result['target_test/acc']:.2f}".rstrip("0").rstrip(".") in markdown
    # self-contained: every picture inlined as a PNG, none referenced by path
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 3 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert "src='curves.png'" not in page
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown):  # the Markdown's PNGs exist beside it
        assert (tmp_path / "rep" / name).is_file()
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "a_distance" not in line]
    assert [row.split(" | ")[1] for row in rows] == ["source_only", "dann"]
    for row in rows:  # both runs have a target: both get the A-distance of their features (before / after)
        assert re.search(r"\| [01]\.\d+ \|$", row), row
    assert "config of" in page and "trade_off" in page  # the resolved config is on the page


def test_report_without_diagnostics_and_of_a_run_in_progress(tmp_path):
    config = tiny_config("dann", iterations=10, train={"eval_every": 5, "log_every": 5, "checkpoint_every": 5})
    from transferlab.experiment import build

    trainer = build(config).trainer(tmp_path / "run", progress=False)
    trainer.prepare_run(resolved_config(config), resume=False, overwrite=False)
    trainer.fit(stop_at=5)
    assert main(["analyze", "report", str(tmp_path / "run"), "--out", str(tmp_path / "rep"), "--no-diagnostics"]) \
        in (0, None)
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["curves.png", "report.html", "report.md"]


def test_report_of_a_folder_that_is_no_run_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["analyze", "report", str(tmp_path / "empty"), "--out", str(tmp_path / "rep")]) == 2
    assert "is not a transferlab run folder" in capsys.readouterr().err
