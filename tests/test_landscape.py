"""The curve table as a landscape: interpolation in log10 lr, clamping, seed noise."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchmarks.landscape import NOISE_BANDS, Landscape, holdout_error


def _rows(curves):
    rows = []
    for (lr, seed), accs in curves.items():
        for epoch, acc in enumerate(accs, start=1):
            rows.append({"lr": lr, "batch_size": 64, "optimizer": "SGD", "seed": seed,
                         "epoch": epoch, "val_accuracy": acc, "val_loss": 1.0,
                         "train_loss": 1.0, "seconds": 2.0 * epoch})
    return pd.DataFrame(rows)


CURVES = {(1e-4, 1): [0.2, 0.4], (1e-2, 1): [0.6, 0.8], (1e-2, 2): [0.62, 0.78],
          (1.0, 1): [0.1, 0.1]}


def test_between_grid_points_the_curve_is_linear_in_log_lr():
    land = Landscape(_rows(CURVES), [])
    acc, sec = land.curve(1e-3, 64, "SGD")  # halfway between 1e-4 and 1e-2 in log10
    assert acc == pytest.approx([0.405, 0.595])  # seed mean at 1e-2: 0.61, 0.79; (0.2+0.61)/2
    assert sec == pytest.approx([2.0, 4.0])
    w = (math.log10(3e-3) + 4) / 2
    assert land.curve(3e-3, 64, "SGD")[0][0] == pytest.approx((1 - w) * 0.2 + w * 0.61)


def test_outside_the_grid_the_nearest_recorded_rate_answers():
    land = Landscape(_rows(CURVES), [])
    assert land.curve(1e-6, 64, "SGD")[0] == pytest.approx([0.2, 0.4])
    assert land.curve(10.0, 64, "SGD")[0] == pytest.approx([0.1, 0.1])
    with pytest.raises(ValueError, match="no curves for batch size 16 with SGD"):
        land.curve(1e-3, 16, "SGD")


def test_seed_noise_and_the_best_come_from_the_recorded_pairs():
    land = Landscape(_rows(CURVES), [])
    # One pair at 1e-2: std of (0.6, 0.62) and of (0.8, 0.78) is 0.01414 each; its best mean
    # accuracy, 0.79, puts it in the 0.7-0.8 band; the bands without pairs take it too.
    assert land.noise == pytest.approx([np.std([0.6, 0.62], ddof=1)] * len(NOISE_BANDS))
    assert land.best() == pytest.approx(0.79)


def test_seed_noise_is_pooled_by_how_good_a_configuration_is():
    curves = {(1e-4, 1): [0.2, 0.3], (1e-4, 2): [0.4, 0.5],  # best 0.4: spread 0.1414
              (1e-2, 1): [0.8, 0.88], (1e-2, 2): [0.8, 0.86]}  # best 0.87: spread 0 and 0.01414
    land = Landscape(_rows(curves), [])
    weak = np.std([0.2, 0.4], ddof=1)
    good = np.sqrt((0.0 + np.std([0.88, 0.86], ddof=1) ** 2) / 2)
    assert land.noise == pytest.approx([weak, np.sqrt((weak ** 2 + good ** 2) / 2),
                                        np.sqrt((weak ** 2 + good ** 2) / 2), good])
    assert land.noise_for(0.3) == pytest.approx(weak)
    assert land.noise_for(0.9) == pytest.approx(good)


def test_held_out_curves_measure_the_interpolation():
    error, n = holdout_error(_rows(CURVES))
    # Only 1e-2 is inside its grid: predicted from 1e-4 and 1.0, halfway in log10.
    assert n == 1
    assert error == pytest.approx(np.mean([abs(0.15 - 0.61), abs(0.25 - 0.79)]))
