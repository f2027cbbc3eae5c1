"""transferlab.analysis.calibration: expected numbers are computed by hand (in the comments) or by an
independent NumPy / scikit-learn / torch expression, never by the function under test."""

import inspect
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from transferlab.analysis.calibration import (
    apply_temperature, auc, calibration_report, confidence_ece, ece, fit_temperature, logit_metrics, nll,
    plot_reliability, reliability,
)
from transferlab.engine.metrics import PREDICTION_STATS, calibration_metrics, prediction_stats
from transferlab.errors import DataError, TransferlabError

# Ten two-class samples: top-class confidence c, predicted class 0 (row [c, 1-c]); `ok` says whether the
# label is the predicted class (else the label is 1, whose probability is 1-c).
CONF = np.array([0.55, 0.58, 0.65, 0.70, 0.75, 0.85, 0.90, 0.90, 0.95, 0.99])
OK = np.array([1, 0, 1, 1, 0, 1, 1, 0, 1, 1])
PROBS = np.stack([CONF, 1 - CONF], axis=1)
LABELS = np.where(OK == 1, 0, 1)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _calibrated(n: int, classes: int, seed: int, scale: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a perfectly calibrated model: labels drawn from softmax(logits)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, classes)) * scale
    y = (_softmax(z).cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return z, y


# ---------------------------------------------------------------- ECE by hand


def test_ece_equal_width_by_hand():
    # 5 bins of width 0.2, right-closed. Top confidences >= 0.5, so only the last three bins are used:
    #   (0.4, 0.6]: 0.55 ok, 0.58 wrong          -> conf 0.565, acc 1/2, gap 0.065,  weight 2/10 -> 0.013
    #   (0.6, 0.8]: 0.65 ok, 0.70 ok, 0.75 wrong -> conf 0.700, acc 2/3, gap 1/30,   weight 3/10 -> 0.010
    #   (0.8, 1.0]: 0.85 .90 ok, .90 wrong, .95 .99 ok -> conf 4.59/5 = 0.918, acc 0.8, gap 0.118,
    #                                                                                weight 5/10 -> 0.059
    # ECE = 0.013 + 0.010 + 0.059 = 0.082
    assert ece(PROBS, LABELS, n_bins=5) == pytest.approx(0.082, abs=1e-12)
    assert ece(torch.tensor(PROBS, dtype=torch.float64), torch.tensor(LABELS), n_bins=5) == pytest.approx(0.082)
    r = reliability(PROBS, LABELS, n_bins=5)
    np.testing.assert_allclose(r["edges"], [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_array_equal(r["count"], [0, 0, 2, 3, 5])
    np.testing.assert_allclose(r["confidence"], [np.nan, np.nan, 0.565, 0.7, 0.918])
    np.testing.assert_allclose(r["accuracy"], [np.nan, np.nan, 0.5, 2 / 3, 0.8])
    assert r["ece"] == pytest.approx(0.082, abs=1e-12)


def test_ece_equal_mass_by_hand():
    # 5 bins of 2 samples each, by sorted confidence (the tied 0.90s fall in one bin anyway):
    #   {0.55 ok, 0.58 wrong}  conf 0.565 acc 0.5 gap 0.065
    #   {0.65 ok, 0.70 ok}     conf 0.675 acc 1.0 gap 0.325
    #   {0.75 wrong, 0.85 ok}  conf 0.800 acc 0.5 gap 0.300
    #   {0.90 ok, 0.90 wrong}  conf 0.900 acc 0.5 gap 0.400
    #   {0.95 ok, 0.99 ok}     conf 0.970 acc 1.0 gap 0.030
    # each weight 2/10: ECE = 0.2 * (0.065 + 0.325 + 0.3 + 0.4 + 0.03) = 0.2 * 1.12 = 0.224
    assert ece(PROBS, LABELS, n_bins=5, strategy="mass") == pytest.approx(0.224, abs=1e-12)
    r = reliability(PROBS, LABELS, n_bins=5, strategy="mass")
    np.testing.assert_array_equal(r["count"], [2, 2, 2, 2, 2])
    np.testing.assert_allclose(r["confidence"], [0.565, 0.675, 0.8, 0.9, 0.97])
    np.testing.assert_allclose(r["edges"], [0, 0.615, 0.725, 0.875, 0.925, 1])  # midpoints between bins


def test_ece_mass_keeps_ties_in_one_bin_and_ignores_order():
    # 2 bins over 6 confidences 0.6, 0.7, 0.7, 0.7, 0.9, 0.95: the ideal split after 3 samples would cut
    # the tied 0.7s, so it moves to the nearest rank that does not (after 4; after 1 is farther):
    #   {0.6 ok, 0.7 ok, 0.7 wrong, 0.7 ok}  conf 2.7/4 = 0.675 acc 0.75 gap 0.075, weight 4/6 -> 0.05
    #   {0.9 wrong, 0.95 ok}                 conf 0.925        acc 0.5  gap 0.425, weight 2/6 -> 0.141666..
    # ECE = 0.05 + 0.425/3 = 0.19166...
    conf = np.array([0.6, 0.7, 0.7, 0.7, 0.9, 0.95])
    ok = np.array([1, 1, 0, 1, 0, 1])
    p, y = np.stack([conf, 1 - conf], 1), np.where(ok == 1, 0, 1)
    expected = 0.05 + 0.425 / 3
    r = reliability(p, y, n_bins=2, strategy="mass")
    np.testing.assert_array_equal(r["count"], [4, 2])
    assert r["ece"] == pytest.approx(expected, abs=1e-12)
    for seed in range(3):  # a rank split would put the tied samples in bins depending on their order
        order = np.random.default_rng(seed).permutation(6)
        assert ece(p[order], y[order], n_bins=2, strategy="mass") == pytest.approx(expected, abs=1e-12)
    # all confidences equal: one bin holding everything, |acc - conf| = |0.5 - 0.8|
    same = np.tile([0.8, 0.2], (4, 1))
    r = reliability(same, [0, 1, 0, 1], n_bins=3, strategy="mass")
    np.testing.assert_array_equal(r["count"], [4])
    assert r["ece"] == pytest.approx(0.3)


def test_bins_are_right_closed_and_cover_zero_and_one():
    # n_bins=2 (edge 0.5): confidence 0.5 lies in the first bin [0, 0.5], 1.0 in the last (0.5, 1].
    p = np.array([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    r = reliability(p, [0, 0, 0], n_bins=2)
    np.testing.assert_array_equal(r["count"], [1, 2])
    np.testing.assert_allclose(r["accuracy"], [1.0, 0.5])  # argmax tie goes to class 0: correct
    # ECE = 1/3 * |1 - 0.5| + 2/3 * |0.5 - 1| = 0.5
    assert r["ece"] == pytest.approx(0.5)


def test_binary_vector_is_positive_class_probability():
    # p = P(class 1): top class 1 with confidence p when p > 0.5, else class 0 with confidence 1 - p.
    p1 = np.array([0.9, 0.2, 0.7, 0.4])
    y = np.array([1, 0, 0, 0])  # correct, correct, wrong (predicted 1), correct (predicted 0 at 0.6)
    # 2 bins: [0, 0.5] empty; (0.5, 1]: conf (0.9 + 0.8 + 0.7 + 0.6) / 4 = 0.75, acc 0.75 -> ECE 0
    assert ece(p1, y, n_bins=2) == pytest.approx(0.0, abs=1e-12)
    # 5 bins: (0.4,0.6] {0.6 ok}: gap 0.4; (0.6,0.8] {0.7 wrong, 0.8 ok}: conf .75 acc .5 gap .25;
    # (0.8,1] {0.9 ok}: gap 0.1 -> ECE = (0.4 + 2 * 0.25 + 0.1) / 4 = 0.25
    assert ece(p1, y, n_bins=5) == pytest.approx(0.25, abs=1e-12)
    assert ece(np.stack([1 - p1, p1], 1), y, n_bins=5) == pytest.approx(0.25, abs=1e-12)


def test_ece_calibrated_is_small_and_confident_wrong_is_one():
    z, y = _calibrated(20000, 3, seed=0)
    p = _softmax(z)
    for strategy in ("width", "mass"):
        assert ece(p, y, strategy=strategy) < 0.02
    # the same probabilities against labels that are never the top class: far from calibrated
    assert ece(p, (p.argmax(1) + 1) % 3) > 0.5
    wrong = np.full((50, 4), 0.001 / 3)
    wrong[np.arange(50), np.arange(50) % 4] = 0.999
    y_wrong = (np.arange(50) + 1) % 4
    for strategy in ("width", "mass"):
        assert ece(wrong, y_wrong, strategy=strategy) == pytest.approx(0.999, abs=1e-9)


# ---------------------------------------------------------------- NLL and AUC


def test_nll_by_hand_and_against_torch():
    # softmax([ln 3, 0]) = [3/4, 1/4]: -ln(3/4); softmax([0, 0]) = [1/2, 1/2]: ln 2; mean of the two
    z = np.array([[math.log(3.0), 0.0], [0.0, 0.0]])
    assert nll(z, [0, 1]) == pytest.approx((math.log(4 / 3) + math.log(2)) / 2, abs=1e-12)
    zt = torch.randn(64, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4
    yt = torch.randint(0, 5, (64,), generator=torch.Generator().manual_seed(1))
    assert nll(zt, yt) == pytest.approx(torch.nn.functional.cross_entropy(zt, yt).item(), abs=1e-10)


def test_auc_matches_scikit_learn():
    rng = np.random.default_rng(0)
    y2 = rng.integers(0, 2, 40)
    p1 = np.clip(0.3 * y2 + rng.random(40) * 0.7, 0, 1)
    assert auc(p1, y2) == pytest.approx(roc_auc_score(y2, p1), abs=1e-12)
    assert auc(np.stack([1 - p1, p1], 1), y2) == pytest.approx(roc_auc_score(y2, p1), abs=1e-12)
    # imbalanced 4 classes: macro (unweighted) one-vs-rest, not prevalence-weighted
    y4 = np.array([0] * 20 + [1] * 8 + [2] * 4 + [3] * 3)
    p4 = _softmax(rng.normal(size=(35, 4)) + 1.5 * np.eye(4)[y4] * rng.random((35, 1)))
    expected = roc_auc_score(y4, p4, multi_class="ovr", average="macro")
    assert expected != pytest.approx(roc_auc_score(y4, p4, multi_class="ovr", average="weighted"))
    assert auc(p4, y4) == pytest.approx(expected, abs=1e-12)
    assert auc(torch.tensor(p4), torch.tensor(y4)) == pytest.approx(expected, abs=1e-12)


def test_auc_with_one_class_raises():
    with pytest.raises(DataError, match="two classes"):
        auc([0.2, 0.7, 0.9], [1, 1, 1])
    with pytest.raises(DataError, match="two classes"):
        auc(np.full((3, 3), 1 / 3), [2, 2, 2])


# ---------------------------------------------------------------- temperature scaling


def test_fit_temperature_recovers_overconfidence():
    z, y = _calibrated(6000, 4, seed=1)
    zv, yv, zt, yt = 3 * z[:3000], y[:3000], 3 * z[3000:], y[3000:]  # over-confident by a factor 3
    t = fit_temperature(zv, yv)
    assert t == pytest.approx(3.0, rel=0.10)
    scaled = apply_temperature(zt, t)
    np.testing.assert_allclose(scaled, zt / t)
    np.testing.assert_array_equal(scaled.argmax(1), zt.argmax(1))  # accuracy identical
    assert nll(scaled, yt) < nll(zt, yt)
    assert ece(_softmax(scaled), yt) < ece(_softmax(zt), yt)
    # T is a minimum of the validation NLL: moving it either way by 5 % is worse
    assert nll(zv / t, yv) < min(nll(zv / (t * 1.05), yv), nll(zv / (t / 1.05), yv))


def test_fit_temperature_underconfident_and_calibrated():
    z, y = _calibrated(3000, 4, seed=2)
    t_under = fit_temperature(0.3 * z, y)
    assert t_under < 1 and t_under == pytest.approx(0.3, rel=0.10)
    assert fit_temperature(z, y) == pytest.approx(1.0, rel=0.10)
    t_tensor = fit_temperature(torch.tensor(0.3 * z, dtype=torch.float32), torch.tensor(y))
    assert t_tensor == pytest.approx(t_under, rel=1e-3)


def test_fit_temperature_at_the_search_bounds():
    # all validation predictions right: the NLL keeps falling as T -> 0, so T is the lower bound 0.01;
    # all wrong: it keeps falling as T -> inf (towards ln C), so T is the upper bound 100
    z = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5], [-1.0, 0.0, 3.0]])
    assert fit_temperature(z, [0, 1, 2]) == pytest.approx(0.01, rel=1e-6)
    assert fit_temperature(z, [1, 2, 0]) == pytest.approx(100.0, rel=1e-6)


def test_apply_temperature_keeps_tensor_and_takes_no_labels():
    assert list(inspect.signature(apply_temperature).parameters) == ["logits", "temperature"]
    z = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    out = apply_temperature(z, 2.0)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[0.5, -1.0], [0.25, 1.5]]))


def test_calibration_report_fits_on_validation_only():
    z, y = _calibrated(4000, 3, seed=3)
    zv, yv, zt, yt = 3 * z[:2000], y[:2000], 3 * z[2000:], y[2000:]
    report = calibration_report(zv, yv, zt, yt, n_bins=10)
    t = report["temperature"]
    assert t == fit_temperature(zv, yv)
    before, after = report["before"], report["after"]
    assert before["acc"] == after["acc"] == pytest.approx(np.mean(zt.argmax(1) == yt))
    assert before["nll"] == pytest.approx(nll(zt, yt)) and after["nll"] == pytest.approx(nll(zt / t, yt))
    assert after["nll"] < before["nll"] and after["ece"] < before["ece"] and after["ece_mass"] < before["ece_mass"]
    assert after["ece"] == pytest.approx(ece(_softmax(zt / t), yt, n_bins=10))
    assert after["ece_mass"] == pytest.approx(ece(_softmax(zt / t), yt, n_bins=10, strategy="mass"))
    assert after["auc"] == pytest.approx(roc_auc_score(yt, _softmax(zt / t), multi_class="ovr"))
    # permuting the test labels changes the test metrics but not T: the test labels are never used to fit
    permuted = calibration_report(zv, yv, zt, np.random.default_rng(0).permutation(yt), n_bins=10)
    assert permuted["temperature"] == t
    assert permuted["before"]["nll"] != pytest.approx(before["nll"])
    # ...while other validation labels do change T
    assert calibration_report(zv, np.random.default_rng(0).permutation(yv), zt, yt)["temperature"] != t
    # a test split with one class: the report still comes back, with auc None
    one = calibration_report(zv, yv, zt[:5], np.zeros(5, dtype=int))
    assert one["before"]["auc"] is None and one["n_test"] == 5


# ---------------------------------------------------------------- plot


def test_plot_reliability_writes_png(tmp_path):
    z, y = _calibrated(500, 3, seed=4)
    t = fit_temperature(3 * z, y)
    diagrams = {"before": reliability(_softmax(3 * z), y), "after": reliability(_softmax(3 * z / t), y, strategy="mass")}
    out = plot_reliability(diagrams, tmp_path / "sub" / "reliability.png", title="test")
    data = out.read_bytes()
    assert out == tmp_path / "sub" / "reliability.png" and len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(DataError, match="non-empty"):
        plot_reliability({}, tmp_path / "x.png")
    with pytest.raises(DataError, match="lacks"):
        plot_reliability({"a": {"ece": 0.1}}, tmp_path / "x.png")


# ---------------------------------------------------------------- bad input


GOOD_P = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])


@pytest.mark.parametrize("probabilities, labels, message", [
    (GOOD_P, [0, 1, 2], "3 entries but there are 2 samples"),
    (np.array([[np.nan, 0.5, 0.5], [0.1, 0.8, 0.1]]), [0, 1], "NaN or Inf in 1 of 2"),
    (np.empty((0, 3)), [], "empty"),
    (GOOD_P, [0, 3], r"0\.\.2"),
    (GOOD_P, [-1, 1], r"0\.\.2"),
    (GOOD_P, [0.5, 1.0], "integer"),
    (GOOD_P, [[1, 0, 0], [0, 1, 0]], "one-hot"),
    (np.array([[1.2, -0.2], [0.5, 0.5]]), [0, 1], r"\[0, 1\]"),
    (np.array([1.5, 0.2]), [0, 1], r"\[0, 1\]"),
    (np.array([0.2, 0.7]), [0, 2], r"0\.\.1"),
    (np.array([[0.5, 0.2], [0.5, 0.5]]), [0, 1], "sum to 1"),
    (np.array([[0.5], [0.5]]), [0, 0], "column"),
])
def test_bad_probabilities_raise(probabilities, labels, message):
    for fn in (lambda: ece(probabilities, labels), lambda: reliability(probabilities, labels, strategy="mass"),
               lambda: auc(probabilities, labels)):
        with pytest.raises(DataError, match=message):
            fn()


def test_bad_logits_and_options_raise():
    z = np.array([[1.0, 0.0], [0.0, 2.0]])
    with pytest.raises(DataError, match="at least 2 classes"):
        nll(np.array([1.0, 2.0]), [0, 1])
    with pytest.raises(DataError, match="NaN"):
        fit_temperature(np.array([[1.0, np.inf], [0.0, 1.0]]), [0, 1])
    with pytest.raises(DataError, match="0..1"):
        fit_temperature(z, [0, 2])
    with pytest.raises(DataError, match="1 entries but there are 2"):
        nll(z, [0])
    with pytest.raises(DataError, match="logits_test has 3"):
        calibration_report(z, [0, 1], np.zeros((2, 3)), [0, 1])
    with pytest.raises(DataError, match="y_test"):
        calibration_report(z, [0, 1], z, [0, 1, 1])
    with pytest.raises(TransferlabError, match="temperature"):
        apply_temperature(z, 0.0)
    with pytest.raises(TransferlabError, match="strategy"):
        ece(GOOD_P, [0, 1], strategy="quantile")
    with pytest.raises(TransferlabError, match="n_bins"):
        ece(GOOD_P, [0, 1], n_bins=0)


# ---------------------------------------------------------------- per-sample confidence (what the engine keeps)


def test_confidence_ece_by_hand_and_equal_to_ece():
    # the ten samples of test_ece_equal_width_by_hand as (confidence, correct) pairs: the same 0.082 and 0.224
    assert confidence_ece(CONF, OK, n_bins=5) == pytest.approx(0.082, abs=1e-12)
    assert confidence_ece(CONF, OK.astype(bool), n_bins=5, strategy="mass") == pytest.approx(0.224, abs=1e-12)
    z, y = _calibrated(3000, 4, seed=5, scale=4.0)
    p = _softmax(z)
    for strategy, bins in (("width", 15), ("mass", 15), ("width", 7)):
        assert confidence_ece(p.max(1), p.argmax(1) == y, bins, strategy) == ece(p, y, bins, strategy)


@pytest.mark.parametrize("confidence, correct, message", [
    ([0.5, 1.2], [1, 0], r"\[0, 1\]"),
    ([[0.5, 0.9]], [[1, 0]], "1-D"),
    ([0.5, 0.9], [1, 0, 1], "shape"),
    ([0.5, 0.9], [1, 2], "0 or 1"),
    ([0.5, np.nan], [1, 0], "NaN"),
])
def test_confidence_ece_rejects_bad_input(confidence, correct, message):
    with pytest.raises(DataError, match=message):
        confidence_ece(np.array(confidence), np.array(correct))


def test_logit_metrics_are_the_reports_numbers_for_one_split():
    z, y = _calibrated(600, 2, seed=6)
    m = logit_metrics(3 * z, y, n_bins=10)
    assert m == calibration_report(z, y, 3 * z, y, n_bins=10)["before"]
    assert m["acc"] == pytest.approx(np.mean(z.argmax(1) == y)) and m["nll"] == pytest.approx(nll(3 * z, y))
    assert logit_metrics(z[:4], [1, 1, 1, 1])["auc"] is None


# ---------------------------------------------------------------- the engine's evaluation metrics

# Four binary samples, logits [0, log(p / (1 - p))] so that P(class 1) = p:
#   A: p 0.75, label 1 -> predicted 1, confidence 0.75, right, NLL -ln 0.75
#   B: p 0.75, label 0 -> predicted 1, confidence 0.75, wrong, NLL -ln 0.25
#   C: p 0.10, label 0 -> predicted 0, confidence 0.90, right, NLL -ln 0.90
#   D: p 0.70, label 1 -> predicted 1, confidence 0.70, right, NLL -ln 0.70
# NLL = -(ln .75 + ln .25 + ln .9 + ln .7) / 4 = -ln(0.118125) / 4
# ECE, 15 bins of width 1/15 (no confidence on an edge): (0.7333, 0.8] {A, B}: conf .75, acc .5, gap .25, weight 1/2;
#   (0.8667, 0.9333] {C}: gap .1, weight 1/4; (0.6667, 0.7333] {D}: gap .3, weight 1/4 -> .125 + .025 + .075 = .225
# AUC of p for label 1: positives A .75, D .70; negatives B .75, C .10; pairs (A,B) tie 1/2, (A,C) 1, (D,B) 0,
#   (D,C) 1 -> 2.5 / 4 = 0.625
P1 = torch.tensor([0.75, 0.75, 0.10, 0.70], dtype=torch.float64)
Y4 = torch.tensor([1, 0, 0, 1])


def _binary_logits(p1: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.zeros_like(p1), torch.log(p1 / (1 - p1))], dim=1).float()


def test_engine_calibration_metrics_by_hand():
    logits = _binary_logits(P1)
    stats = prediction_stats(logits, Y4, logits.argmax(1))
    assert stats.shape == (4, len(PREDICTION_STATS)) and stats.dtype == torch.float64
    m = calibration_metrics(stats, 2)
    assert set(m) == {"nll", "ece", "auc"}
    assert m["nll"] == pytest.approx(-math.log(0.118125) / 4, rel=1e-6)
    assert m["ece"] == pytest.approx(0.225, abs=1e-6)
    assert m["auc"] == pytest.approx(0.625)
    # batches are concatenated in any order: the metrics are of the whole set
    parts = [prediction_stats(logits[i:i + 1], Y4[i:i + 1], logits[i:i + 1].argmax(1)) for i in (2, 0, 3, 1)]
    assert calibration_metrics(torch.cat(parts), 2) == pytest.approx(m)


def test_engine_calibration_metrics_use_the_given_prediction_and_bf16_logits():
    logits = _binary_logits(P1)
    # confidence is the probability of the class the confusion matrix counts, not recomputed
    stats = prediction_stats(logits, Y4, torch.tensor([0, 0, 0, 0]))
    np.testing.assert_allclose(stats[:, 1], [0.25, 0.25, 0.9, 0.3], rtol=1e-6)
    np.testing.assert_array_equal(stats[:, 2], [0, 1, 1, 0])
    bf16 = prediction_stats(logits.bfloat16(), Y4, logits.argmax(1))
    assert bf16.dtype == torch.float64 and calibration_metrics(bf16, 2)["nll"] == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits.bfloat16().double(), Y4)))


def test_engine_auc_only_for_two_classes_and_left_out_for_one_class():
    logits = _binary_logits(P1)
    one_class = calibration_metrics(prediction_stats(logits, torch.zeros(4, dtype=torch.long), logits.argmax(1)), 2)
    assert set(one_class) == {"nll", "ece"}  # undefined AUC: no key (and no NaN in metrics.jsonl)
    z, y = _calibrated(500, 3, seed=7)
    z3 = torch.tensor(z, dtype=torch.float32)
    m = calibration_metrics(prediction_stats(z3, torch.tensor(y), z3.argmax(1)), 3)
    assert set(m) == {"nll", "ece"}
    assert m["nll"] == pytest.approx(nll(z3.double(), y), rel=1e-9)
    assert m["ece"] == pytest.approx(ece(_softmax(z3.double().numpy()), y), abs=1e-12)
    bad = prediction_stats(torch.tensor([[0.0, float("nan")]]), torch.tensor([0]), torch.tensor([0]))
    assert all(math.isnan(v) for v in calibration_metrics(bad, 2).values())
