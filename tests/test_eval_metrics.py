"""Evaluation metrics: accuracy and macro-F1 from a confusion matrix, equal to scikit-learn's on the same predictions,
and what the engine and `evaluate_on` report for a trained model."""

import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from transferlab.engine.metrics import classification_metrics
from transferlab.experiment import build, evaluate_on, predict_proba

from conftest import tiny_config


def confusion_of(y, p, k):
    return torch.bincount(torch.tensor(y) * k + torch.tensor(p), minlength=k * k).view(k, k)


def test_macro_f1_by_hand():
    # true 0 0 1 1 ; predicted 0 1 1 1 -> class 0: P 1, R .5, F1 2/3; class 1: P 2/3, R 1, F1 .8; class 2 absent
    m = classification_metrics(confusion_of([0, 0, 1, 1], [0, 1, 1, 1], 3))
    assert m["acc"] == pytest.approx(75.0)
    assert m["macro_f1"] == pytest.approx(100 * (2 / 3 + 0.8) / 2)


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_scikit_learn(seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (200,), generator=g)
    p = torch.where(torch.rand(200, generator=g) < 0.6, y, torch.randint(0, 5, (200,), generator=g))  # 4: never true
    m = classification_metrics(confusion_of(y.tolist(), p.tolist(), 5))
    assert m["acc"] == pytest.approx(100 * accuracy_score(y, p))
    assert m["macro_f1"] == pytest.approx(100 * f1_score(y, p, average="macro", zero_division=0))


def test_engine_and_evaluate_on_report_the_macro_f1_of_the_models_predictions():
    experiment = build(tiny_config("source_only", iterations=15))
    result = experiment.trainer(None, progress=False).fit()
    predicted = predict_proba(experiment).argmax(dim=1)
    y = experiment.test.y.cpu()
    expected = 100 * f1_score(y, predicted, average="macro", zero_division=0)
    assert result["target_test/macro_f1"] == pytest.approx(expected, abs=1e-6)
    assert result["target_test/acc"] == pytest.approx(100 * accuracy_score(y, predicted))
    assert evaluate_on(experiment)["macro_f1"] == pytest.approx(expected, abs=1e-6)


def test_data_eval_sets_are_evaluated_next_to_the_test_set_under_their_labels():
    from transferlab.errors import ConfigError

    config = tiny_config("source_only", iterations=10, data={"eval": [
        {"name": "digits_m", "part": "test", "label": "photo"}, {"name": "digits", "part": "test"}]})
    experiment = build(config)
    assert set(experiment.extra_tests) == {"photo", "test"}
    result = experiment.trainer(None, progress=False).fit()
    assert result["photo/acc"] == pytest.approx(result["target_test/acc"])  # the same set as the default test set
    own = evaluate_on(experiment, experiment.extra_tests["test"])
    assert result["test/acc"] == pytest.approx(own["acc"]) and result["test/macro_f1"] == pytest.approx(own["macro_f1"])
    with pytest.raises(ConfigError, match="same label"):
        build(tiny_config("source_only", data={"eval": [{"name": "digits", "part": "test"},
                                                        {"name": "digits_m", "part": "test"}]}))
