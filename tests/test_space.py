from __future__ import annotations

import math

import optuna

from tuning.space.hyperparameters import (
    BATCH_SIZES,
    LR_HIGH,
    LR_LOW,
    OPTIMIZER_NAMES,
    TUTORIAL,
    TUTORIAL_OPTIMIZERS,
    suggest,
)


def test_suggestions_stay_inside_the_space_and_cover_it():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    points = [suggest(study.ask()) for _ in range(300)]
    assert all(LR_LOW <= p.lr <= LR_HIGH for p in points)
    assert {p.batch_size for p in points} == set(BATCH_SIZES)
    assert {p.optimizer for p in points} == set(TUTORIAL_OPTIMIZERS) == {"SGD", "Adam", "RMSprop"}
    assert set(TUTORIAL_OPTIMIZERS) < set(OPTIMIZER_NAMES)
    # Log-uniform: about half the draws fall below the geometric middle of the range.
    middle = math.sqrt(LR_LOW * LR_HIGH)
    assert 0.4 < sum(p.lr < middle for p in points) / len(points) < 0.6


def test_learning_rate_is_sampled_on_a_log_scale():
    study = optuna.create_study()
    trial = study.ask()
    suggest(trial)
    distribution = study.trials[0].distributions["lr"]
    assert distribution.log and (distribution.low, distribution.high) == (1e-5, 1e-1)


def test_enqueued_tutorial_configuration_comes_back_unchanged():
    study = optuna.create_study()
    study.enqueue_trial(TUTORIAL.as_params())
    assert suggest(study.ask()) == TUTORIAL
    assert TUTORIAL.as_params() == {"lr": 1e-3, "batch_size": 64, "optimizer": "SGD"}


def test_the_space_names_exactly_the_optimizers_the_loops_build():
    from model.loops import OPTIMIZERS

    assert tuple(OPTIMIZERS) == OPTIMIZER_NAMES


def test_describe_writes_a_configuration_in_a_few_words():
    from tuning.space.hyperparameters import describe

    assert describe({"lr": 0.000294, "batch_size": 16, "optimizer": "Adam"}) == (
        "Adam lr 0.000294 batch 16")
    assert describe({"optimizer": "SGD", "lr": 1e-3, "batch_size": 64, "momentum": 0.9}) == (
        "SGD lr 0.001 batch 64 momentum 0.9")


def test_the_knobs_are_the_fields_of_a_point_and_the_names_the_models():
    from dataclasses import fields

    from model.schedule import SCHEDULES
    from tuning.space.hyperparameters import KNOBS, SCHEDULE_NAMES, Hyperparameters

    assert list(KNOBS) == [f.name for f in fields(Hyperparameters)]
    assert SCHEDULE_NAMES == SCHEDULES
