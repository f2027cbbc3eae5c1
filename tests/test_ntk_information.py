"""The NTK and information-bottleneck views (transferlab.analysis.ntk / .information, `analyze ntk|information`).

Expected values come from closed forms (XXᵀ, the label kernel), finite differences, scikit-learn's Ridge and
mutual_info_classif, or numerical integration; never from the function under test."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import nn

from transferlab.analysis.information import domain_labels, entropy, knn_mi, variational_mi
from transferlab.analysis.ntk import (
    empirical_ntk, jacobian_features, kernel_alignment, kernel_distance, kernel_regression,
)
from transferlab.errors import DataError, TransferlabError

# ---------------------------------------------------------------- the empirical NTK


def test_ntk_of_a_linear_model_is_the_gram_matrix():
    torch.manual_seed(0)
    x = torch.randn(12, 5, dtype=torch.float64)
    linear = nn.Linear(5, 1, bias=False).double()  # f(x) = wᵀx: ∂f/∂w = x
    assert torch.equal(empirical_ntk(linear, x), x @ x.T)
    with_bias = nn.Linear(5, 1).double()  # ∂f/∂b = 1 adds 1 to every entry
    assert torch.allclose(empirical_ntk(with_bias, x), x @ x.T + 1, rtol=0, atol=1e-12)
    x2 = torch.randn(4, 5, dtype=torch.float64)
    assert torch.allclose(empirical_ntk(linear, x, x2, batch_size=5), x @ x2.T, rtol=0, atol=1e-12)


def _finite_difference_jacobian(model: nn.Module, x: torch.Tensor, view, eps: float = 1e-6) -> torch.Tensor:
    """(n, outputs, P) Jacobian of view(model(x_i)) by central differences, one parameter entry at a time."""
    params = list(model.parameters())
    columns = []
    with torch.no_grad():
        for p in params:
            flat = p.view(-1)
            for j in range(flat.numel()):
                old = flat[j].item()
                flat[j] = old + eps
                plus = torch.stack([view(model(xi[None])[0]) for xi in x])
                flat[j] = old - eps
                minus = torch.stack([view(model(xi[None])[0]) for xi in x])
                flat[j] = old
                columns.append((plus - minus) / (2 * eps))
    return torch.stack(columns, dim=-1).reshape(len(x), -1, len(columns))


def test_ntk_of_a_one_hidden_layer_network_matches_finite_differences():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(7, 4, dtype=torch.float64)
    jac = _finite_difference_jacobian(net, x, lambda out: out)  # (7, 3, P)
    summed = jac.sum(dim=1)  # the "sum" view: ∂Σ_c f_c/∂θ
    assert torch.allclose(jacobian_features(net, x, batch_size=3), summed, rtol=1e-7, atol=1e-8)  # rows: Jacobians
    assert torch.allclose(empirical_ntk(net, x), summed @ summed.T, rtol=1e-7, atol=1e-8)
    trace = torch.einsum("icp,jcp->ij", jac, jac)  # Σ_c ⟨∂f_c(x_i), ∂f_c(x_j)⟩
    assert torch.allclose(empirical_ntk(net, x, output="trace"), trace, rtol=1e-7, atol=1e-8)
    one = jac[:, 2]
    assert torch.allclose(empirical_ntk(net, x, output=2), one @ one.T, rtol=1e-7, atol=1e-8)
    # a parameter subset: only the output layer's weight and bias
    last = jac[:, :, -(6 * 3 + 3):].sum(dim=1)
    assert torch.allclose(empirical_ntk(net, x, parameters=["2.weight", "2.bias"]), last @ last.T, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("kind", ["sketch", "gaussian"])
def test_projected_ntk_is_seeded_and_unbiased(kind):
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 2)).double()  # 290 parameters
    x = torch.randn(10, 6, dtype=torch.float64)
    exact = empirical_ntk(net, x)
    one = empirical_ntk(net, x, projection=64, projection_kind=kind, seed=3)
    assert torch.allclose(one, empirical_ntk(net, x, projection=64, projection_kind=kind, seed=3, batch_size=3),
                          rtol=1e-12, atol=1e-12)
    assert not torch.equal(one, empirical_ntk(net, x, projection=64, projection_kind=kind, seed=4))
    mean = torch.stack([empirical_ntk(net, x, projection=64, projection_kind=kind, seed=s) for s in range(200)]).mean(0)
    # E[ΦΦᵀ] = Θ: the average of 200 independent maps is within a few percent (single maps: ~√(2/64) = 18 %)
    assert ((mean - exact).norm() / exact.norm()).item() < 0.04
    assert ((one - exact).norm() / exact.norm()).item() < 0.5


def test_kernel_regression_with_a_linear_kernel_equals_ridge():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    x_train, x_test = rng.normal(size=(40, 6)), rng.normal(size=(15, 6))
    labels = np.array([3, 5, 9])[rng.integers(0, 3, 40)]  # any integer labels
    ridge = 0.7
    predictions, scores = kernel_regression(x_train @ x_train.T, labels, x_test @ x_train.T, ridge, return_scores=True)
    onehot = (labels[:, None] == np.array([3, 5, 9])).astype(float)
    reference = Ridge(alpha=ridge, fit_intercept=False).fit(x_train, onehot).predict(x_test)
    assert np.allclose(scores, reference, atol=1e-10)
    assert np.array_equal(predictions, np.array([3, 5, 9])[reference.argmax(1)])
    with pytest.raises(DataError, match="increase ridge"):
        kernel_regression(np.zeros((3, 3)), [0, 1, 0], np.zeros((2, 3)), 0.0)


def test_alignment_of_the_label_kernel_is_one_and_kernel_distance_hand_computed():
    labels = np.array([0, 1, 2, 1, 0, 2, 2])
    y = np.eye(3)[labels]
    assert kernel_alignment(y @ y.T, labels) == pytest.approx(1.0, abs=1e-12)
    assert kernel_alignment(5 * y @ y.T + 2, labels) == pytest.approx(1.0, abs=1e-12)  # scale, constant: centred away
    assert kernel_alignment(np.eye(7) + 0.1 * y @ y.T, labels) < kernel_alignment(np.eye(7) + y @ y.T, labels) < 1
    k0 = np.array([[2.0, 0.0], [0.0, 1.0]])
    d = kernel_distance(k0, 3 * k0)
    assert d["relative_change"] == pytest.approx(2.0) and d["cosine_distance"] == pytest.approx(0.0, abs=1e-12)
    d = kernel_distance(k0, np.array([[1.0, 0.0], [0.0, 2.0]]))  # ‖K1−K0‖ = √2, ‖K0‖ = √5; ⟨K0,K1⟩ = 4
    assert d["relative_change"] == pytest.approx(math.sqrt(2 / 5)) and d["cosine_distance"] == pytest.approx(1 - 4 / 5)


# ---------------------------------------------------------------- mutual information

N_MI = 4000


def test_variational_bound_of_a_label_copy_approaches_entropy_and_of_noise_zero():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 2000)
    copy = variational_mi(np.eye(10)[labels], labels, n_bootstrap=50)
    # the held-out split's plug-in H(Y) ≈ log 10; a probe that reads the label loses < 0.02 nats
    assert copy["entropy"] == pytest.approx(math.log(10), abs=0.02)
    assert copy["entropy"] - 0.02 < copy["mi"] <= copy["entropy"]
    assert copy["mi_bits"] == pytest.approx(copy["mi"] / math.log(2))
    assert copy["n_train"] == copy["n_test"] == 1000
    noise = variational_mi(rng.normal(size=(2000, 20)), labels, n_bootstrap=50)
    assert abs(noise["mi"]) < 0.02 and noise["ci"][0] < 0.0 < noise["ci"][1] + 0.01


def _gaussian_pair(mu: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Y ~ Bernoulli(1/2), Z | Y ~ N(±μ, 1); the true I(Z; Y) = log 2 − E_z[H(Y | z)] by numerical integration."""
    def conditional_entropy(z: float) -> float:
        p = 0.5 * (stats.norm.pdf(z - mu) + stats.norm.pdf(z + mu))
        q = stats.logistic.cdf(2 * mu * z)  # P(Y = 1 | z)
        return p * stats.entropy([q, 1 - q])

    true = math.log(2) - integrate.quad(conditional_entropy, -np.inf, np.inf)[0]
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return (2 * y - 1) * mu + rng.standard_normal(n), y, true


def test_both_estimators_agree_with_the_true_mi_of_a_gaussian_pair():
    z, y, true = _gaussian_pair(1.0, N_MI, seed=0)
    assert true == pytest.approx(0.3368, abs=1e-3)
    probe = variational_mi(z, y)
    knn = knn_mi(z, y)
    # stated error at n = 4000: each within 0.04 nats and three of its standard errors (~0.011) of the truth, and
    # within 0.04 nats of each other (seeds 0-5 checked: errors up to 2.1 SE; the SE covers evaluation noise only)
    for estimate in (probe, knn):
        assert abs(estimate["mi"] - true) < min(0.04, 3 * estimate["se"])
    assert abs(probe["mi"] - knn["mi"]) < 0.04
    # the kNN estimator is Ross's, as scikit-learn implements it for one feature (scaling and jitter aside)
    from sklearn.feature_selection import mutual_info_classif

    assert knn["mi"] == pytest.approx(mutual_info_classif(z[:, None], y, random_state=0)[0], abs=1e-6)


def test_domain_labels_balance_the_domains_and_entropy_is_plug_in():
    s, t = np.zeros((30, 2)), np.ones((12, 2))
    z, d = domain_labels(s, t)
    assert z.shape == (24, 2) and np.array_equal(np.bincount(d), [12, 12]) and (z[d == 1] == 1).all()
    assert entropy([0, 0, 1, 1]) == pytest.approx(math.log(2))


@pytest.mark.parametrize("call, error, match", [
    (lambda: variational_mi(np.ones((10, 2)), [0] * 9 + [1]), DataError, "rarest class"),
    (lambda: knn_mi(np.ones((10, 2)), [0, 1] * 5), DataError, "constant"),
    (lambda: kernel_alignment(np.ones((3, 2)), [0, 1, 0]), DataError, "square"),
    (lambda: kernel_distance(np.eye(2), np.eye(3)), DataError, "same samples"),
    (lambda: empirical_ntk(nn.Linear(2, 1), torch.ones(3, 2), output="max"), TransferlabError, "output view"),
    (lambda: empirical_ntk(nn.Linear(2, 1), torch.ones(3, 2), parameters=["nope"]), TransferlabError, "nope"),
])
def test_bad_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------- the commands on tiny saved runs


def test_analyze_ntk_on_a_tiny_pretrained_run(tmp_path, capsys):
    from test_selftaught import _pretrain_config
    from transferlab.cli import main as cli

    run = tmp_path / "ae0"
    assert cli(["pretrain", str(_pretrain_config(tmp_path, iterations=2)), "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "ntk"
    assert cli(["analyze", "ntk", str(run), "--labels-per-class", "1", "3", "--max-samples", "60",
                "--projection", "512", "--out", str(out)]) == 0
    report = json.loads((out / "ntk.json").read_text())
    rows = report["rows"]
    assert [(r["init"], r["labels_per_class"]) for r in rows] == [("pretrained", 1), ("pretrained", 3), ("random", 1),
                                                                 ("random", 3)]
    for r in rows:
        assert r["n_train"] == 10 * r["labels_per_class"] and r["n_test"] == 60
        assert 0.0 <= r["kernel_regression_acc"] <= 100.0 and 0.0 <= r["finetune_acc"] <= 100.0
        assert -1.0 <= r["alignment"] <= 1.0 and -1.0 <= r["alignment_end"] <= 1.0
        assert r["kernel_relative_change"] > 0 and 0.0 <= r["kernel_cosine_distance"] <= 1.0
        assert (tmp_path / "ntk" / "finetuned" / r["finetuned_run"].split("/")[-1] / "model.safetensors").is_file()
    # the starting kernel does not depend on k (same init, same test samples): same alignment
    assert rows[0]["alignment"] == pytest.approx(rows[1]["alignment"], rel=1e-9)
    cells = {(r["init"], r["labels_per_class"]) for r in rows}
    assert {(s["init"], s["labels_per_class"]) for s in report["summary"]} == cells
    assert (out / "ntk.png").stat().st_size > 5_000
    assert "NTK acc" in capsys.readouterr().out
    assert cli(["analyze", "ntk", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "not a transferlab run" in capsys.readouterr().err


def test_analyze_information_on_tiny_adaptation_runs(tmp_path, capsys):
    from conftest import tiny_config
    from transferlab.cli import main as cli
    from transferlab.experiment import train

    runs = []
    for method in ("source_only", "dann"):
        train(tiny_config(method, iterations=10), tmp_path / method, progress=False)
        runs.append(str(tmp_path / method))
    out = tmp_path / "info"
    assert cli(["analyze", "information", *runs, "--max-samples", "150", "--bootstrap", "20", "--out", str(out)]) == 0
    report = json.loads((out / "information.json").read_text())
    assert [r["method"] for r in report["runs"]] == ["source_only", "dann"]
    for r in report["runs"]:
        assert [e["layer"] for e in r["layers"]][-1] == "representation" and len(r["layers"]) == 5
        for entry in r["layers"]:
            for quantity, ceiling in (("I(Z;Y)", math.log(10)), ("I(Z;D)", math.log(2))):
                for estimator in ("variational", "knn"):
                    value = entry[quantity][estimator]
                    assert -0.2 < value["mi"] < ceiling + 0.2 and value["ci"][0] <= value["mi"] <= value["ci"][1]
                    assert value["mi_bits"] == pytest.approx(value["mi"] / math.log(2))
        assert r["layers"][0]["I(Z;D)"]["variational"]["entropy"] == pytest.approx(math.log(2))
    assert len(report["summary"]) == 2 * 5 * 2 * 2  # methods × layers × quantities × estimators
    assert (out / "information.png").stat().st_size > 5_000
    assert "I(Z;D) kNN" in capsys.readouterr().out
