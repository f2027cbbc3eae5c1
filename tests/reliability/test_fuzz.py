"""Config parsing and the CLI's override syntax, fuzzed: any input gives a config or a ConfigError, nothing else."""

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transferlab.cli import main
from transferlab.experiment import load_config, resolved_config
from transferlab.errors import ConfigError

BASE = Path(__file__).resolve().parents[2] / "configs" / "digits" / "mnist_usps_dann.yaml"

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
keys = st.sampled_from(["seed", "data", "data.batch_size", "data.source.name", "model.backbone", "method",
                        "method.name", "method.trade_off", "optim.lr", "optim", "train.iterations",
                        "train.precision", "nope", "data.source", "method.bn_mode"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=40), max_size=3))
def test_arbitrary_override_strings(overrides):
    try:
        load_config(BASE, overrides)
    except ConfigError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(keys, values), max_size=4))
def test_arbitrary_values_for_real_keys(pairs):
    import yaml

    overrides = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                 for k, v in pairs]
    try:
        config = load_config(BASE, overrides)
    except ConfigError:
        return
    resolved_config(config)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=10), values, max_size=5))
def test_arbitrary_raw_documents(raw):
    try:
        load_config(raw=raw)
    except ConfigError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_yaml_files(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_bytes(content)
    try:
        load_config(path)
    except ConfigError:
        pass


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["train", "eval", "datasets", "list", "--set", "x=1", "optim.lr=-1", "--resume",
                                 "--out", str(BASE), "missing.yaml", "methods", "--data-root", "/nonexistent"]),
                max_size=5))
def test_cli_never_raises_a_traceback(argv):
    """Any argument list ends in an exit status (argparse usage errors exit 2 via SystemExit)."""
    try:
        # A bogus data root keeps a valid `train` from starting a real run.
        code = main(argv + ["--no-progress", "--data-root", "/nonexistent-root"] if argv[:1] == ["train"] else argv)
    except SystemExit as exc:
        code = exc.code
    assert code in (0, 2, None) or isinstance(code, int)
