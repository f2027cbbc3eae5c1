"""Configs and the CLI reject bad input with one clear message, never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from transferlab.cli import main
from transferlab.experiment import load_config, method_config
from transferlab.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_every_shipped_config_validates():
    files = sorted((CONFIGS / "digits").glob("*_*.yaml"))
    assert len(files) >= 18
    for path in files:
        config = load_config(path)
        assert method_config(config).name in path.stem


def test_base_inheritance_and_overrides():
    config = load_config(CONFIGS / "digits" / "mnist_usps_dann.yaml", ["method.trade_off=0.5", "optim.lr=0.02",
                                                                        "train.precision=bf16"])
    assert config.data.source.name == "mnist" and config.data.target.name == "usps"
    assert method_config(config).trade_off == 0.5
    assert config.optim.lr == 0.02 and config.train.precision == "bf16"


@pytest.mark.parametrize("override, message", [
    (["optim.lr=-1"], "optim.lr: Input should be greater than 0"),
    (["optim.lrr=0.1"], "optim.lrr: unknown key. Did you mean 'lr'?"),
    (["optm.lr=0.1"], "optm: unknown key. Did you mean 'optim'?"),
    (["method.trade_of=0.1"], "method.trade_of: unknown key. Did you mean 'trade_off'?"),
    (["method.name=dan"], "unknown method 'dan'. Did you mean 'dann'?"),
    (["train.precision=fp16"], "train.precision: Input should be 'fp32' or 'bf16'"),
    (["train.iterations=ten"], "train.iterations: Input should be a valid integer"),
    (["optim.lr"], "--set expects KEY=VALUE"),
    (["optim.lr.x=1"], "optim.lr is a value, not a section"),
])
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "digits" / "mnist_usps_dann.yaml", override)
    assert message in str(info.value)


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(loop)


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    assert main(["train", str(CONFIGS / "digits" / "mnist_usps_dann.yaml"), "--set", "optim.lr=-1",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid configuration") and "Traceback" not in err
    assert not (tmp_path / "r").exists(), "a rejected config must not create the run folder"


def test_cli_missing_dataset_names_the_file_and_the_fix(tmp_path, capsys):
    code = main(["train", str(CONFIGS / "digits" / "mnist_usps_dann.yaml"), "--data-root", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "mnist" in err and "train.npz does not exist" in err and "transferlab datasets download mnist" in err


def test_cli_datasets_list_and_methods(capsys):
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "digits_m" in out and "embedded" in out and "mnist" in out
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ("source_only", "dann", "adda", "cdan", "cdan_e", "mcd"):
        assert f"{name}:" in out


def test_cli_train_and_eval_end_to_end(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "data: {source: {name: digits}, target: {name: digits_m}, image_size: 16, channels: 3, batch_size: 16}\n"
        "model: {backbone: lenet, bottleneck_dim: 32}\nmethod: {name: dann}\n"
        "train: {iterations: 8, eval_every: 4, checkpoint_every: 4, log_every: 4}\n")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "transferlab.cli"]
    done = subprocess.run(cmd + ["train", str(config), "--set", "method.trade_off=0.5", "--out", str(run),
                                 "--no-progress"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (run / "model.safetensors").is_file() and (run / "metrics.jsonl").is_file()
    done = subprocess.run(cmd + ["eval", str(run)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '"target_test/acc"' in done.stdout
