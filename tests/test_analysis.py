"""transferlab.analysis: every expected number is computed by hand (in the comments) or by an
independent NumPy / SciPy / autograd expression, never by the function under test."""

import math

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from transferlab.analysis import (
    distance_matrix, extract, filter_normalized_direction, fisher_diagonal, h_score, interpolate, joint_error,
    layer_activations, leep, linear_cka, logme, nce, probe_head, proxy_a_distance, sample, sharpness, slice_2d,
    task_distance, task_embedding, transrate, weighted_kendall_tau,
)
from transferlab.errors import CheckpointError, DataError, TransferlabError

# ---------------------------------------------------------------- transferability scores


def _max_gaussian_evidence(f: np.ndarray, y: np.ndarray) -> float:
    """max over α, β of log N(y; 0, FFᵀ/α + I/β) / n, by a generic optimiser (LogME's evidence)."""
    n = len(y)

    def neg(log_ab):
        a, b = np.exp(log_ab)
        return -stats.multivariate_normal.logpdf(y, np.zeros(n), f @ f.T / a + np.eye(n) / b)

    best = min((optimize.minimize(neg, x0, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12,
                                                                          "maxiter": 4000})
                for x0 in ([0.0, 0.0], [2.0, 2.0])), key=lambda r: r.fun)
    return -best.fun / n


@pytest.mark.parametrize("n, d, seed, duplicate_column", [(15, 3, 0, False), (15, 3, 0, True), (6, 8, 1, False)])
def test_logme_equals_maximised_gaussian_evidence(n, d, seed, duplicate_column):
    # LogME's evidence is log N(y; 0, FFᵀ/α + I/β) maximised over α, β. (6, 8): more features than
    # samples, so log|A| has D − n zero eigenvalues of FᵀF; seed 1 has a single maximum per class.
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    f = rng.normal(size=(n, d)) + np.eye(d)[labels]
    if duplicate_column:  # rank-deficient F: a zero singular value inside the thin SVD
        f = np.concatenate([f, f[:, :1]], axis=1)
    expected = np.mean([_max_gaussian_evidence(f, (labels == c).astype(float)) for c in range(3)])
    assert logme(torch.tensor(f), torch.tensor(labels)) == pytest.approx(expected, abs=1e-6)


def test_logme_prefers_informative_features():
    rng = np.random.default_rng(1)
    labels = np.array([0, 1] * 10)
    informative = np.eye(2)[labels] + 0.1 * rng.normal(size=(20, 2))
    noise = rng.normal(size=(20, 2))
    assert logme(informative, labels) > logme(noise, labels) + 0.5


def test_leep_hand_computed():
    theta = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    labels = [0, 0, 1, 1]
    # P(y,z) = [[1.5, .5], [.5, 1.5]]/4, P(z) = (.5, .5), P(y|z) = [[.75, .25], [.25, .75]]
    # EEP_i = Σ_z P(y_i|z) θ_iz = .9·.75+.1·.25 = .70, .55, .2·.25+.8·.75 = .65, .60
    expected = (math.log(0.70) + math.log(0.55) + math.log(0.65) + math.log(0.60)) / 4
    assert leep(torch.tensor(theta), torch.tensor(labels)) == pytest.approx(expected, abs=1e-12)


def test_leep_is_zero_for_deterministic_one_hot_predictions():
    z = np.array([0, 1, 2, 0, 2, 1])
    labels = np.array([0, 1, 1, 0, 1, 1])  # z -> y: 0->0, 1->1, 2->1 (many to one)
    assert leep(np.eye(3)[z], labels) == pytest.approx(0.0, abs=1e-12)
    labels[0] = 1  # one exception: no longer deterministic
    assert leep(np.eye(3)[z], labels) < -0.1


def test_leep_of_hard_predictions_equals_nce_hand_computed():
    z, labels = [0, 0, 1, 1], [0, 1, 1, 1]
    # P(y|z=0) = (½, ½), P(y|z=1) = (0, 1): H(Y|Z) = ½ log 2
    assert nce(z, labels) == pytest.approx(-0.5 * math.log(2), abs=1e-12)
    assert leep(np.eye(2)[z], labels) == pytest.approx(-0.5 * math.log(2), abs=1e-12)


def test_nce_limits():
    labels = [0, 0, 0, 1]
    assert nce([3, 3, 7, 5], labels) == pytest.approx(0.0, abs=1e-12)  # Z determines Y
    # Z constant: NCE = −H(Y) = ¾ log ¾ + ¼ log ¼
    assert nce([0, 0, 0, 0], labels) == pytest.approx(0.75 * math.log(0.75) + 0.25 * math.log(0.25), abs=1e-12)


def test_h_score_hand_computed():
    # f = (0, 2, 1, 3), classes {0, 2} and {1, 3}: class means 1, 2; mean 1.5
    # var f = (2.25 + .25 + .25 + 2.25)/4 = 1.25, var E[f|y] = .25 → H = .25 / 1.25 = 0.2
    assert h_score([0.0, 2.0, 1.0, 3.0], [0, 0, 1, 1]) == pytest.approx(0.2, abs=1e-12)


def test_h_score_invariant_to_invertible_linear_maps_and_bounded_by_classes_minus_one():
    rng = np.random.default_rng(2)
    labels = np.array([0, 1, 2] * 6)
    f = rng.normal(size=(18, 3)) + np.eye(3)[labels]
    a = rng.normal(size=(3, 3)) + 3 * np.eye(3)
    assert h_score(1000.0 * f @ a + 5.0, labels) == pytest.approx(h_score(f, labels), rel=1e-8)
    # features that are the class indicator: cov(f) = cov(E[f|y]) of rank C−1 → H = C − 1 = 2 (pseudo-inverse)
    assert h_score(np.eye(3)[labels], labels) == pytest.approx(2.0, abs=1e-9)


def test_transrate_hand_computed():
    # centred Z, class 0 on the x axis, class 1 on the y axis, ε = 1, d = 2, n = 4:
    # R(Z) = ½ logdet(I + 2/4·diag(2, 2)) = log 2; R(Z_c) = ½ logdet(I + 2/2·diag(2, 0)) = ½ log 3
    # TrR = log 2 − (½·½ log 3 + ½·½ log 3) = ½ log(4/3)
    z = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert transrate(z, [0, 0, 1, 1], eps=1.0) == pytest.approx(0.5 * math.log(4 / 3), abs=1e-12)


def test_transrate_matches_direct_formula_on_unbalanced_classes():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(7, 3)) + 4.0
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    eps = 0.5
    zc = z - z.mean(axis=0)
    rate = lambda m: 0.5 * np.log(np.linalg.det(np.eye(3) + 3 / (len(m) * eps**2) * m.T @ m))  # noqa: E731
    expected = rate(zc) - (4 / 7 * rate(zc[:4]) + 2 / 7 * rate(zc[4:6]) + 1 / 7 * rate(zc[6:]))
    assert transrate(z, labels, eps=eps) == pytest.approx(expected, abs=1e-10)


def test_weighted_kendall_tau_hand_computed():
    # weights 1/(r+1) per rank, pair weight = sum. Ranked by score: pairs (a,b) w=1.5 discordant,
    # (a,c) w=4/3 and (b,c) w=5/6 concordant → (−1.5 + 4/3 + 5/6)/(11/3) = 2/11; ranked by accuracy
    # the same 2/11; plain Kendall τ would be 1/3.
    assert weighted_kendall_tau([3.0, 2.0, 1.0], [0.2, 0.3, 0.1]) == pytest.approx(2 / 11, abs=1e-12)
    assert weighted_kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert weighted_kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    # swapping the two best models costs more than swapping the two worst
    top = weighted_kendall_tau([5, 4, 3, 2, 1], [4, 5, 3, 2, 1])
    bottom = weighted_kendall_tau([5, 4, 3, 2, 1], [5, 4, 3, 1, 2])
    assert top < bottom - 0.1


# ---------------------------------------------------------------- divergence


def test_proxy_a_distance_separable_domains_is_two():
    source = np.linspace(-3, -1, 20)[:, None]
    target = np.linspace(1, 3, 20)[:, None]
    for classifier in ("linear", "mlp"):
        out = proxy_a_distance(source, target, classifier=classifier)
        assert out["domain_error"] == 0.0 and out["a_distance"] == 2.0 and out["a_distance_raw"] == 2.0
    out = proxy_a_distance(source, target, train_fraction=0.25)
    assert (out["n_train"], out["n_test"]) == (10, 30)


def test_proxy_a_distance_uses_the_balanced_error():
    # constant features: every test sample gets the same prediction, so one domain is all wrong.
    # Balanced error = ½(0 + 1) = 0.5 → 0; the plain error over 15 source + 5 target would be ¼ or ¾.
    out = proxy_a_distance(np.zeros((30, 2)), np.zeros((10, 2)))
    assert out["domain_error"] == 0.5 and out["a_distance_raw"] == 0.0 and out["a_distance"] == 0.0
    assert (out["n_train"], out["n_test"]) == (20, 20)


def test_proxy_a_distance_same_distribution_is_near_zero_and_deterministic():
    rng = np.random.default_rng(4)
    source, target = rng.normal(size=(150, 2)), rng.normal(size=(150, 2))
    out = proxy_a_distance(torch.tensor(source), torch.tensor(target), seed=1)
    assert out["a_distance"] < 0.35
    assert out["a_distance_raw"] == pytest.approx(2 * (1 - 2 * out["domain_error"]))
    assert out["a_distance"] == max(0.0, out["a_distance_raw"])
    assert (out["n_train"], out["n_test"]) == (150, 150)
    assert proxy_a_distance(source, target, seed=1) == out


def test_joint_error_small_when_one_rule_labels_both_domains_and_large_when_flipped():
    rng = np.random.default_rng(5)
    xs = rng.normal(size=(60, 2))
    xt = rng.normal(size=(60, 2)) + np.array([0.0, 3.0])  # shifted along the irrelevant axis
    ys, yt = (xs[:, 0] > 0).astype(int), (xt[:, 0] > 0).astype(int)
    out = joint_error(xs, ys, xt, yt)
    assert out["lambda"] < 0.15
    assert out["lambda"] == pytest.approx(out["source_error"] + out["target_error"])
    # same inputs, opposite labels: any h has ε_S + ε_T = 1 in expectation
    flipped = joint_error(xs, ys, xs.copy(), 1 - ys)
    assert 0.75 < flipped["lambda"] < 1.25


# ---------------------------------------------------------------- task2vec


def _logistic_model(seed: int = 0) -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 4).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    return model, x, torch.softmax(model(x), dim=1).detach()


def test_exact_fisher_of_logistic_regression_matches_closed_form():
    # ∂ log p_y/∂W_kj = (1[y=k] − p_k) x_j and E_y (1[y=k] − p_k)² = p_k (1 − p_k), so
    # F_W[k, j] = mean_i p_ik (1 − p_ik) x_ij², F_b[k] = mean_i p_ik (1 − p_ik)
    model, x, p = _logistic_model()
    fisher = fisher_diagonal(model, x, exact=True, batch_size=4)
    v = p * (1 - p)
    assert torch.allclose(fisher["weight"], (v[:, :, None] * x[:, None, :] ** 2).mean(0), atol=1e-6, rtol=0)
    assert torch.allclose(fisher["bias"], v.mean(0), atol=1e-6, rtol=0)


def test_empirical_fisher_of_logistic_regression_matches_closed_form():
    model, x, p = _logistic_model(1)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    r = (torch.eye(4, dtype=torch.float64)[labels] - p) ** 2
    fisher = fisher_diagonal(model, x, labels, sampled=False, batch_size=5)
    assert torch.allclose(fisher["weight"], (r[:, :, None] * x[:, None, :] ** 2).mean(0), atol=1e-10, rtol=0)
    assert torch.allclose(fisher["bias"], r.mean(0), atol=1e-10, rtol=0)


def test_sampled_fisher_approaches_the_exact_one_and_is_reproducible():
    model, x, p = _logistic_model(2)
    many = x.repeat(500, 1)
    sampled = fisher_diagonal(model, many, batch_size=1000, generator=torch.Generator().manual_seed(0))
    again = fisher_diagonal(model, many, batch_size=1000, generator=torch.Generator().manual_seed(0))
    v = p * (1 - p)
    exact = (v[:, :, None] * x[:, None, :] ** 2).mean(0)
    assert torch.equal(sampled["weight"], again["weight"])
    assert torch.allclose(sampled["weight"], exact, rtol=0.15, atol=0.01)
    assert torch.allclose(sampled["bias"], v.mean(0), rtol=0.1, atol=0.005)


def test_exact_fisher_of_a_nonlinear_net_matches_per_sample_autograd_loop():
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
    x = torch.randn(5, 2, dtype=torch.float64)
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for xi in x:
        log_p = torch.log_softmax(model(xi[None]), dim=1)[0]
        for k in range(3):
            grads = torch.autograd.grad(log_p[k], list(model.parameters()), retain_graph=True)
            for (n, _), g in zip(model.named_parameters(), grads):
                expected[n] += log_p[k].exp().detach() * g**2 / len(x)
    fisher = fisher_diagonal(model, x, exact=True, parameters=["0.weight", "2.bias"])
    assert set(fisher) == {"0.weight", "2.bias"}
    for n in fisher:
        assert torch.allclose(fisher[n], expected[n], atol=1e-12, rtol=1e-9)


def test_task_embedding_concatenates_in_sorted_name_order():
    emb = task_embedding({"b": torch.tensor([[1.0, 2.0]]), "a": torch.tensor([3.0])})
    assert emb.tolist() == [3.0, 1.0, 2.0]


def test_task_distance_hand_computed():
    # a = (1,1)/(4,2) = (¼, ½), b = (3,1)/(4,2) = (¾, ½): cos = (3/16 + 1/4)/√(5/16 · 13/16) = 7/√65
    assert task_distance(torch.tensor([1.0, 1.0]), torch.tensor([3.0, 1.0])) == pytest.approx(1 - 7 / math.sqrt(65))
    assert task_distance(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])) == pytest.approx(1.0)
    # an entry that is zero in both is left out; a positive multiple has distance 0
    assert task_distance(torch.tensor([1.0, 2.0, 0.0]), torch.tensor([3.0, 6.0, 0.0])) == pytest.approx(0.0, abs=1e-12)
    names, d = distance_matrix({"p": torch.tensor([1.0, 1.0]), "q": torch.tensor([3.0, 1.0]),
                                "r": torch.tensor([2.0, 2.0])})
    assert names == ["p", "q", "r"]
    pq = 1 - 7 / math.sqrt(65)
    # q, r: a = (3/5, 1/3), b = (2/5, 2/3): cos = (104/225)/√(106/225 · 136/225) = 104/√(106·136)
    qr = 1 - 104 / math.sqrt(106 * 136)
    assert np.allclose(d, [[0, pq, 0], [pq, 0, qr], [0, qr, 0]], atol=1e-12)


# ---------------------------------------------------------------- landscape


def _bn_net_and_states():
    torch.manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    model.train()(x)  # move the BN running statistics away from their defaults
    state_a = {k: v.clone() for k, v in model.state_dict().items()}
    for p in model.parameters():
        torch.nn.init.normal_(p)
    model(x + 1)
    state_b = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()

    def loss_fn(m):
        return torch.nn.functional.mse_loss(m(x), y)

    return model, state_a, state_b, loss_fn


def test_interpolate_endpoints_midpoint_and_restores_model():
    model, state_a, state_b, loss_fn = _bn_net_and_states()
    model.load_state_dict(state_a)  # the last α = 1 leaves state_b in place unless restored
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = interpolate(model, state_a, state_b, loss_fn, [0.0, 0.5, 1.0])

    def loss_at(state):
        probe = _bn_net_and_states()[0]
        probe.load_state_dict(state)
        with torch.no_grad():
            return float(loss_fn(probe))

    mid = {k: 0.5 * state_a[k] + 0.5 * state_b[k] if v.is_floating_point() else state_b[k] for k, v in state_a.items()}
    assert losses[0] == loss_at(state_a) and losses[2] == loss_at(state_b)
    assert losses[1] == pytest.approx(loss_at(mid), rel=1e-6)
    assert losses[0] != losses[2]
    # float buffers are interpolated, integer ones come from the nearer endpoint (1 and 2 batches seen)
    bn_mean = interpolate(model, state_a, state_b, lambda m: m[1].running_mean[0], [0.25])[0]
    assert bn_mean == pytest.approx(float(0.75 * state_a["1.running_mean"][0] + 0.25 * state_b["1.running_mean"][0]))
    counts = interpolate(model, state_a, state_b, lambda m: m[1].num_batches_tracked, [0.0, 0.4, 0.6, 1.0])
    assert counts == [1.0, 1.0, 2.0, 2.0]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_filter_normalized_direction_matches_filter_norms_and_zeroes_bias_bn():
    torch.manual_seed(5)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.Flatten(),
                                torch.nn.Linear(12, 2))
    d = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())
    assert set(d) == set(params)
    for name in ("0.weight", "3.weight"):
        assert d[name].shape == params[name].shape
        assert torch.allclose(d[name].flatten(1).norm(dim=1), params[name].detach().flatten(1).norm(dim=1), rtol=1e-5)
    for name in ("0.bias", "1.weight", "1.bias", "3.bias"):
        assert torch.count_nonzero(d[name]) == 0
    again = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    other = filter_normalized_direction(model, torch.Generator().manual_seed(1))
    assert torch.equal(d["0.weight"], again["0.weight"]) and not torch.equal(d["0.weight"], other["0.weight"])


def test_slice_2d_grid_matches_the_loss_along_the_returned_directions():
    torch.manual_seed(6)
    model = torch.nn.Linear(3, 2).double()
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()

    def loss_fn(m):
        return (m.weight ** 2).sum() + (m.bias ** 2).sum()

    out = slice_2d(model, loss_fn, steps=5, span=0.5, seed=3)
    delta, eta = out["directions"]
    assert np.allclose(out["alphas"], [-0.5, -0.25, 0.0, 0.25, 0.5]) and out["losses"].shape == (5, 5)
    for i, a in enumerate(out["alphas"]):
        for j, b in enumerate(out["betas"]):
            expected = float(((w0 + a * delta["weight"] + b * eta["weight"]) ** 2).sum() + (b0 ** 2).sum())
            assert out["losses"][i, j] == pytest.approx(expected, rel=1e-12)
    assert out["losses"][2, 2] == pytest.approx(float((w0 ** 2).sum() + (b0 ** 2).sum()), rel=1e-12)
    assert torch.equal(model.weight, w0) and torch.equal(model.bias, b0)


def test_sharpness_of_a_quadratic_is_half_r_squared_dHd():
    torch.manual_seed(7)
    model = torch.nn.Linear(4, 3).double()
    w_start = model.weight.detach().clone()
    a = torch.randn(12, 12, dtype=torch.float64)
    hessian = a @ a.T + torch.eye(12, dtype=torch.float64)
    center, grad_term = torch.randn(12, dtype=torch.float64), torch.randn(12, dtype=torch.float64)

    def loss_fn(m):  # not at its minimum: the ± average must cancel the gradient term
        u = m.weight.flatten() - center
        return 0.5 * u @ hessian @ u + grad_term @ u + m.bias.sum()

    radius = 0.3
    generator = torch.Generator().manual_seed(11)
    dhd = [float(d @ hessian @ d) for d in (filter_normalized_direction(model, generator)["weight"].flatten()
                                            for _ in range(4))]
    assert sharpness(model, loss_fn, radius=radius, n_directions=4, seed=11) == pytest.approx(
        0.5 * radius**2 * np.mean(dhd), rel=1e-9)
    assert sharpness(model, loss_fn, radius=radius, n_directions=4, seed=11, reduction="max") == pytest.approx(
        0.5 * radius**2 * max(dhd), rel=1e-9)
    assert torch.equal(model.weight, w_start)


def test_sharpness_with_per_filter_curvature_has_a_direction_free_closed_form():
    # H = h_k I on filter (row) k: dᵀHd = Σ_k h_k ‖d_k‖² = Σ_k h_k ‖W_k‖² for every filter-normalised d
    torch.manual_seed(8)
    model = torch.nn.Linear(5, 3).double()
    w = model.weight.detach().clone()
    h = torch.tensor([1.0, 4.0, 0.5], dtype=torch.float64)

    def loss_fn(m):
        return 0.5 * (h[:, None] * (m.weight - w) ** 2).sum()

    expected = 0.5 * 0.2**2 * float((h * (w ** 2).sum(dim=1)).sum())
    assert sharpness(model, loss_fn, radius=0.2, n_directions=3, seed=0) == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------- similarity


def test_linear_cka_hand_computed_and_one_dimensional_is_squared_correlation():
    # X centred = (−1, 0, 1); Y centred columns (⅔, −⅓, −⅓), (−⅓, ⅔, −⅓): YᵀX = (−1, 0) → ‖·‖² = 1,
    # ‖XᵀX‖ = 2, ‖YᵀY‖ = ‖[[⅔, −⅓], [−⅓, ⅔]]‖ = √10/3 → CKA = 1 / (2√10/3) = 3/(2√10)
    assert linear_cka([[1.0], [2.0], [3.0]], [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]) == pytest.approx(
        3 / (2 * math.sqrt(10)), abs=1e-12)
    u, v = np.array([1.0, 3.0, 2.0, 5.0]), np.array([2.0, 1.0, 4.0, 3.0])
    assert linear_cka(u, v) == pytest.approx(np.corrcoef(u, v)[0, 1] ** 2, abs=1e-12)


def test_linear_cka_invariances():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(10, 4)), rng.normal(size=(10, 3))
    base = linear_cka(x, y)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    assert linear_cka(torch.tensor(x), torch.tensor(x)) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(7.5 * x + 2.0, y) == pytest.approx(base, abs=1e-12)
    assert abs(linear_cka(x * np.array([10.0, 1.0, 1.0, 0.1]), y) - base) > 1e-3  # not anisotropic scaling


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("call, error, match", [
    (lambda: logme(np.ones((4, 2)), [1, 1, 1, 1]), DataError, "1 distinct class"),
    (lambda: h_score([[0.0], [np.nan], [1.0], [2.0]], [0, 0, 1, 1]), DataError, "NaN"),
    (lambda: leep(np.full((4, 2), 0.5), [0, 1, 0]), DataError, "3 entries but there are 4"),
    (lambda: leep(np.array([[2.0, -1.0], [0.0, 1.0]]), [0, 1]), DataError, "softmax"),
    (lambda: nce([0, 1, 0], [0, 1, 0, 1]), DataError, "one label per sample"),
    (lambda: transrate(np.ones((4, 2)), [0, 1]), DataError, "one label per sample"),
    (lambda: weighted_kendall_tau([1, 2, 3], [1, 2]), DataError, "one of each"),
    (lambda: proxy_a_distance(np.ones((10, 2)), np.ones((10, 3))), DataError, "same model and layer"),
    (lambda: proxy_a_distance(np.ones((1, 2)), np.ones((10, 2))), DataError, "at least 2"),
    (lambda: proxy_a_distance(np.ones((10, 2)), np.ones((10, 2)), classifier="svm"), TransferlabError, "'linear'"),
    (lambda: joint_error(np.ones((10, 2)), [0] * 10, np.ones((10, 2)), [0] * 9), DataError, "9 entries"),
    (lambda: linear_cka(np.ones((4, 2)), np.ones((5, 2))), DataError, "same examples"),
    (lambda: linear_cka(np.ones((4, 2)), np.arange(4.0)), DataError, "constant"),
    (lambda: fisher_diagonal(torch.nn.Linear(2, 2), torch.randn(3, 2), sampled=False), TransferlabError,
     "needs labels"),
    (lambda: fisher_diagonal(torch.nn.Linear(2, 2), torch.randn(3, 2), torch.tensor([0, 1, 5]), sampled=False),
     DataError, "class indices"),
    (lambda: fisher_diagonal(torch.nn.Linear(2, 2), torch.randn(3, 2), parameters=["w"]), TransferlabError,
     "unknown"),
    (lambda: task_distance(torch.ones(3), torch.ones(2)), DataError, "same probe network"),
    (lambda: interpolate(torch.nn.Linear(2, 2), {}, torch.nn.Linear(2, 2).state_dict(), lambda m: 0.0, [0.0]),
     CheckpointError, "does not fit the model"),
    (lambda: sharpness(torch.nn.Linear(2, 2), lambda m: 0.0, reduction="median"), TransferlabError, "'mean'"),
])
def test_bad_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_linear_cka_gram_form_for_wide_features_equals_the_feature_form():
    from transferlab.analysis import linear_cka

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(6, 40)), rng.normal(size=(6, 3))  # 40 features > 6 samples: the Gram path
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-10)
    assert linear_cka(x, x) == pytest.approx(1.0)


# ---------------------------------------------------------------- a model's outputs on a dataset


def _toy_set(n: int = 10, dims: int = 8):
    from transferlab.data import ArrayDataset

    x = torch.arange(n * dims, dtype=torch.float32).reshape(n, dims) / (n * dims)
    return ArrayDataset(x, torch.arange(n) % 3, "toy", "train", 3)


def _toy_method():
    from transferlab.methods import METHODS
    from transferlab.models import Encoder
    from transferlab.models.backbones import MLP

    torch.manual_seed(0)
    return METHODS.get("source_only")(Encoder(MLP(8, hidden=16), bottleneck_dim=4), 3)


def test_sample_draws_a_sorted_reproducible_subset_without_replacement():
    data = _toy_set()
    drawn = sample(data, 4, seed=1)
    rows = [int(r) for r in torch.nonzero((drawn.x[:, None] == data.x[None]).all(-1))[:, 1]]
    assert len(set(rows)) == 4 and rows == sorted(rows)  # distinct samples, in the set's order
    assert torch.equal(drawn.y, data.y[rows])  # labels travel with their samples
    assert torch.equal(sample(data, 4, seed=1).x, drawn.x) and not torch.equal(sample(data, 4, seed=2).x, drawn.x)
    assert sample(data, 10) is data and sample(data, 50) is data


def test_extract_returns_the_methods_own_features_logits_and_labels_in_eval_mode():
    from transferlab.data import FeatureTransform

    method, data = _toy_method(), _toy_set()
    out = extract(method, data, FeatureTransform(), batch_size=3)  # batches of 3, 3, 3, 1: concatenated in order
    assert method.training  # its mode is restored
    method.eval()
    with torch.no_grad():
        assert np.allclose(out["features"], method.representation(data.x, "source").numpy(), atol=1e-6)
        assert np.allclose(out["logits"], method.predict(data.x).numpy(), atol=1e-6)
    assert np.array_equal(out["labels"], data.y.numpy())


def test_layer_activations_are_each_layers_output():
    from transferlab.models.layers import encoder_layers

    method, data = _toy_method(), _toy_set()
    acts = layer_activations(method, data)
    assert list(acts) == [layer[-1] for layer in encoder_layers(method.encoder)]
    assert [a.shape for a in acts.values()] == [(10, 16), (10, 16), (10, 4)]
    first = method.encoder.backbone.net[0]
    with torch.no_grad():
        assert np.allclose(acts["backbone.net.0"], (data.x @ first.weight.T + first.bias).numpy(), atol=1e-6)


def test_probe_head_fits_separable_features_reproducibly():
    features = torch.tensor([[2.0, 0.0], [1.5, 0.3], [0.0, 2.0], [0.2, 1.7], [-2.0, -2.0], [-1.6, -1.9]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    head = probe_head(features, labels, 3)
    assert torch.equal(head(features).argmax(1), labels)
    assert torch.equal(probe_head(features, labels, 3).weight, head.weight)  # seeded: the same head again


def test_layer_activations_record_each_layer_before_a_following_in_place_relu():
    from conftest import tiny_config
    from transferlab.analysis import layer_activations
    from transferlab.experiment import build

    experiment = build(tiny_config("source_only"))
    acts = layer_activations(experiment.method, experiment.test.subset(range(64)), experiment.transform)
    bn = acts["bottleneck.1"]  # BatchNorm output, followed by ReLU(inplace=True) in the bottleneck
    assert (bn < 0).any(), "the hook kept a view that the in-place ReLU overwrote"
