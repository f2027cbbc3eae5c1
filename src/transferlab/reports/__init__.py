"""Run-level reports: the diagnostics of :mod:`transferlab.analysis` applied to saved runs, written as the
JSON files, plots and tables of ``transferlab analyze``; see docs/analysis.md.

This package sits above :mod:`transferlab.protocol`: reports load runs, build experiments and train
baselines, while :mod:`transferlab.analysis` stays pure functions on tensors, arrays and models. Each
module is one ``analyze`` sub-command, with its report functions, its plots and its :class:`Command`:

* :mod:`.divergence`: Ben-David terms (source/target error, proxy A-distance, joint error λ).
* :mod:`.features`: t-SNE of source and target features.
* :mod:`.scores`: transferability scores of candidate encoders against their fine-tuned accuracy.
* :mod:`.landscape`: loss along initialisation → solution, 2-D slice, sharpness.
* :mod:`.cka`: linear CKA between the layers of two runs.
* :mod:`.transfer`: the negative-transfer check of a domain adaptation task.
* :mod:`.task2vec`: Task2Vec distances between tasks, and against measured transfer gains.
* :mod:`.layers`: Yosinski et al.'s layer transferability curves.
* :mod:`.ntk`: the empirical NTK of pretrained vs randomly initialised networks (kernel regression, alignment,
  kernel movement during fine-tuning).
* :mod:`.information`: I(Z; Y_target) and I(Z; D) per layer, by a held-out probe bound and a kNN estimate.
* :mod:`.run_report`: one HTML/Markdown page per run or comparison (curves, schedules, accuracy, A-distance, t-SNE).
* :mod:`.calibration`: ECE, NLL, AUC and the reliability diagram of a run's test predictions, before and after
  temperature scaling fitted on a validation set.
* :mod:`.gradcam`: Grad-CAM maps of a convolutional run's predictions on test images, as a PNG sheet.

The diagnostics themselves (and scikit-learn, SciPy, matplotlib) are imported when a report runs, so the
command line's parser is built without them.
"""

from . import (calibration, cka, divergence, features, gradcam, information, landscape, layers, ntk, run_report, scores,
               task2vec, transfer)
from .common import Command

ANALYZE: tuple[Command, ...] = tuple(module.COMMAND for module in (
    divergence, features, scores, landscape, cka, transfer, task2vec, layers, ntk, information, calibration, gradcam,
    run_report))
"""The ``transferlab analyze`` sub-commands, in the order the CLI lists them."""

__all__ = ["ANALYZE", "Command"]
