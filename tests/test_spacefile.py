from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from tuning.space import hyperparameters as hard_wired
from tuning.space.check import KNOBS
from tuning.space.file import (
    BUILTIN,
    Space,
    SpaceError,
    builtin_path,
    load_space,
    parse_space,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

# The three parameters every space must define, to which each test adds or replaces tables.
REQUIRED = {
    "lr": '[lr]\ntype = "float"\nlow = 1e-5\nhigh = 1e-1\nlog = true\n',
    "batch_size": '[batch_size]\ntype = "categorical"\nchoices = [32, 64]\n',
    "optimizer": '[optimizer]\ntype = "categorical"\nchoices = ["SGD", "Adam"]\n',
}


def space_text(**tables: str) -> str:
    """The required tables, with ``tables`` replacing (or, when empty, removing) them or added."""
    merged = REQUIRED | tables
    return "\n".join(text for text in merged.values() if text)


def load_text(tmp_path: Path, text: str) -> Space:
    path = tmp_path / "my.toml"
    path.write_text(text)
    return load_space(str(path))


def error_lines(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(SpaceError) as info:
        load_text(tmp_path, text)
    return str(info.value).splitlines()


def ask(space: Space, trials: int, sampler: optuna.samplers.BaseSampler | None = None
        ) -> list[tuple[dict[str, object], dict[str, object]]]:
    """(suggest()'s dict, trial.params) for each of ``trials`` random trials."""
    study = optuna.create_study(sampler=sampler or optuna.samplers.RandomSampler(seed=0))
    results = []
    for _ in range(trials):
        trial = study.ask()
        results.append((space.suggest(trial), dict(trial.params)))
        study.tell(trial, 0.5)
    return results


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_spaces_load_and_round_trip_through_their_text(name):
    space = load_space(name)
    assert space.name == name
    assert space.text == builtin_path(name).read_text()
    assert {"lr", "batch_size", "optimizer"} <= {p.name for p in space.params}
    again = parse_space(space.text, name)
    assert again.params == space.params and again.text == space.text


@pytest.mark.parametrize("sampler", [optuna.samplers.RandomSampler, optuna.samplers.TPESampler])
def test_tutorial_file_gives_the_same_trials_as_the_hard_wired_space(sampler):
    space = load_space("tutorial")
    from_file = optuna.create_study(sampler=sampler(seed=0))
    from_code = optuna.create_study(sampler=sampler(seed=0))
    for _ in range(20):  # past TPE's 10 start-up trials, so its model is compared too
        trial_a, trial_b = from_file.ask(), from_code.ask()
        params_a, params_b = space.suggest(trial_a), hard_wired.suggest(trial_b).as_params()
        assert params_a == params_b
        assert trial_a.distributions == trial_b.distributions
        value = params_a["lr"] * params_a["batch_size"]  # any function of the point will do
        from_file.tell(trial_a, value)
        from_code.tell(trial_b, value)


def test_tutorial_table_rows():
    assert load_space("tutorial").table() == [
        ("lr", "float", "1e-05..0.1 log", ""),
        ("batch_size", "categorical", "16, 32, 64, 128, 256", ""),
        ("optimizer", "categorical", "SGD, Adam, RMSprop", ""),
    ]


def test_extended_table_shows_conditions_and_per_choice_ranges():
    rows = {row[0]: row for row in load_space("extended").table()}
    assert rows["lr"] == ("lr", "float", "0.0001..0.1 log; SGD: 0.01..0.5; Adam: 0.0001..0.01; "
                          "AdamW: 0.0001..0.01; RMSprop: 0.0001..0.003", "")
    assert rows["momentum"] == ("momentum", "float", "0.8..0.99", "optimizer = SGD")
    assert rows["nesterov"] == ("nesterov", "categorical", "true, false", "optimizer = SGD")
    assert rows["warmup_epochs"][3] == "schedule = cosine"
    assert rows["schedule"][2] == "cosine, onecycle"
    assert rows["hidden_layers"] == ("hidden_layers", "int", "2..3", "")
    assert rows["batch_norm"] == ("batch_norm", "fixed", "true", "")
    assert list(rows) == re.findall(r"^\[(\w+)\]$", builtin_path("extended").read_text(), re.M)


def test_momentum_and_nesterov_exist_only_for_sgd():
    results = ask(load_space("extended"), 30)
    assert {values["optimizer"] for values, _ in results} == {"SGD", "Adam", "AdamW", "RMSprop"}
    for values, params in results:
        sgd = values["optimizer"] == "SGD"
        assert ("momentum" in values) == ("nesterov" in values) == ("momentum" in params) == sgd
        assert ("warmup_epochs" in values) == (values["schedule"] != "onecycle")


def test_per_choice_ranges_are_respected():
    space = load_space("extended")
    ranges = {"SGD": (1e-2, 5e-1), "Adam": (1e-4, 1e-2), "AdamW": (1e-4, 1e-2),
              "RMSprop": (1e-4, 3e-3)}
    results = ask(space, 50)
    for values, _ in results:
        low, high = ranges[values["optimizer"]]
        assert low <= values["lr"] <= high
    assert any(values["lr"] > 1e-2 for values, _ in results)  # SGD's range was really used


def test_per_choice_ranges_fall_back_to_the_parameter_range_and_suit_sqlite(tmp_path):
    text = space_text(lr='[lr]\ntype = "float"\nlow = 0.5\nhigh = 0.6\n'
                         '[lr.by.optimizer.SGD]\nlow = 0.01\nhigh = 0.02\n')
    space = load_text(tmp_path, text)
    # SQLite checks each trial's distributions against the study's earlier ones.
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}",
                                sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=4))
    for _ in range(10):
        trial = study.ask()
        values = space.suggest(trial)
        low, high = (0.01, 0.02) if values["optimizer"] == "SGD" else (0.5, 0.6)
        assert low <= values["lr"] <= high
        study.tell(trial, values["lr"])
    assert {t.params["optimizer"] for t in study.trials} == {"SGD", "Adam"}


def test_fixed_values_are_returned_but_not_suggested(tmp_path):
    text = space_text(batch_size='[batch_size]\ntype = "fixed"\nvalue = 64\n',
                      momentum='[momentum]\ntype = "fixed"\nvalue = 0.9\n'
                               'when = { optimizer = "SGD" }\n',
                      dropout='[dropout]\ntype = "fixed"\nvalue = 0\n')
    space = load_text(tmp_path, text)
    assert space.fixed() == {"batch_size": 64, "momentum": 0.9, "dropout": 0.0}
    for values, params in ask(space, 10):
        assert values["batch_size"] == 64 and values["dropout"] == 0.0
        assert set(params) == {"lr", "optimizer"}
        assert ("momentum" in values) == (values["optimizer"] == "SGD")
        assert space.complete(params) == values


def test_parameters_are_sampled_after_those_they_depend_on(tmp_path):
    text = space_text(lr='[lr]\ntype = "float"\nlow = 0.1\nhigh = 0.2\n'
                         '[lr.by.optimizer.SGD]\nlow = 0.3\nhigh = 0.4\n',
                      momentum='[momentum]\ntype = "float"\nlow = 0.8\nhigh = 0.9\n'
                               'when = { nesterov = true }\n',
                      nesterov='[nesterov]\ntype = "categorical"\nchoices = [true, false]\n'
                               'when = { optimizer = ["SGD"] }\n')
    space = load_text(tmp_path, text)
    assert [p.name for p in space.params] == ["lr", "batch_size", "optimizer", "momentum",
                                              "nesterov"]
    for values, params in ask(space, 20):
        assert list(params) == [k for k in ("batch_size", "optimizer", "lr", "nesterov",
                                            "momentum") if k in params]
        assert ("momentum" in values) == (values.get("nesterov") is True)


KNOB_NAMES = ", ".join(sorted(KNOBS))
BAD_FILES = {
    "low above high": (
        space_text(lr='[lr]\ntype = "float"\nlow = 0.1\nhigh = 0.01\n'),
        "my.toml: lr: low must be below high (got low 0.1, high 0.01)"),
    "unknown parameter": (
        space_text(dropuot='[dropuot]\ntype = "float"\nlow = 0.0\nhigh = 0.5\n'),
        f"my.toml: dropuot: unknown parameter; the network and loops have: {KNOB_NAMES}"),
    "when names an unknown parameter": (
        space_text(momentum='[momentum]\ntype = "fixed"\nvalue = 0.9\n'
                            'when = { optimiser = "SGD" }\n'),
        "my.toml: momentum: 'when' names unknown parameter 'optimiser'"),
    "empty choices": (
        space_text(optimizer='[optimizer]\ntype = "categorical"\nchoices = []\n'),
        "my.toml: optimizer: choices must not be empty"),
    "log range from 0": (
        space_text(lr='[lr]\ntype = "float"\nlow = 0\nhigh = 0.1\nlog = true\n'),
        "my.toml: lr: log needs low > 0 (got 0)"),
    "unknown key": (
        space_text(lr='[lr]\ntype = "float"\nlow = 1e-5\nhigh = 0.1\nhihg = 0.2\n'),
        "my.toml: lr: unknown key 'hihg'; allowed: type, low, high, log, step, when, by"),
    "unknown key of a categorical": (
        space_text(optimizer='[optimizer]\ntype = "categorical"\nchoices = ["SGD"]\n'
                             '[optimizer.by.batch_size]\n"32" = { low = 1, high = 2 }\n'),
        "my.toml: optimizer: unknown key 'by'; allowed: type, choices, when"),
    "syntax error": (
        space_text() + '[dropout]\ntype = "float"\nlow = \n',
        "my.toml: TOML syntax error at line 16, column 7: Invalid value"),
    "missing type": (
        space_text(dropout='[dropout]\nlow = 0.0\nhigh = 0.5\n'),
        "my.toml: dropout: missing key 'type'; allowed: float, int, categorical, fixed"),
    "unknown type": (
        space_text(dropout='[dropout]\ntype = "uniform"\nlow = 0.0\nhigh = 0.5\n'),
        "my.toml: dropout: unknown type 'uniform'; allowed: float, int, categorical, fixed"),
    "type that cannot fit the knob": (
        space_text(optimizer='[optimizer]\ntype = "float"\nlow = 0.0\nhigh = 0.5\n'),
        "my.toml: optimizer: type 'float' does not fit; optimizer takes one of SGD, Adam, "
        "AdamW, RMSprop, so use categorical or fixed"),
    "int range for a float knob": (
        space_text(dropout='[dropout]\ntype = "int"\nlow = 0\nhigh = 1\n'),
        "my.toml: dropout: type 'int' does not fit; dropout takes a number in [0, 1), "
        "so use float or categorical or fixed"),
    "high outside the knob's values": (
        space_text(dropout='[dropout]\ntype = "float"\nlow = 0.0\nhigh = 1.0\n'),
        "my.toml: dropout: high 1.0 is not allowed; dropout takes a number in [0, 1)"),
    "probability above 1": (
        space_text(hflip='[hflip]\ntype = "float"\nlow = 0.0\nhigh = 1.5\n'),
        "my.toml: hflip: high 1.5 is not allowed; hflip takes a probability in [0, 1]"),
    "choice outside the knob's values": (
        space_text(optimizer='[optimizer]\ntype = "categorical"\nchoices = ["SGD", "Adagrad"]\n'),
        "my.toml: optimizer: choice 'Adagrad' is not allowed; optimizer takes one of SGD, Adam, "
        "AdamW, RMSprop"),
    "fixed value outside the knob's values": (
        space_text(batch_size='[batch_size]\ntype = "fixed"\nvalue = 0\n'),
        "my.toml: batch_size: value 0 is not allowed; batch_size takes an integer >= 1"),
    "wrong kind of choice": (
        space_text(nesterov='[nesterov]\ntype = "categorical"\nchoices = ["yes", false]\n'),
        "my.toml: nesterov: choice 'yes' is not allowed; nesterov takes true or false"),
    "fixed without a value": (
        space_text(dropout='[dropout]\ntype = "fixed"\n'),
        "my.toml: dropout: missing key 'value'; a fixed parameter needs one"),
    "repeated choice": (
        space_text(batch_size='[batch_size]\ntype = "categorical"\nchoices = [32, 64, 32]\n'),
        "my.toml: batch_size: choices must not repeat (got 32 again)"),
    "missing bound": (
        space_text(dropout='[dropout]\ntype = "float"\nlow = 0.0\n'),
        "my.toml: dropout: missing key 'high'; a range needs low and high"),
    "bound of the wrong kind": (
        space_text(hidden_layers='[hidden_layers]\ntype = "int"\nlow = 1\nhigh = 2.5\n'),
        "my.toml: hidden_layers: high must be a finite integer (got 2.5)"),
    "step with log": (
        space_text(lr='[lr]\ntype = "float"\nlow = 1e-5\nhigh = 0.1\nlog = true\nstep = 0.01\n'),
        "my.toml: lr: step and log cannot be used together"),
    "step not positive": (
        space_text(hidden_width='[hidden_width]\ntype = "int"\nlow = 64\nhigh = 512\nstep = 0\n'),
        "my.toml: hidden_width: step must be a positive integer (got 0)"),
    "parameter not a table": (
        "dropout = 0.5\n" + space_text(),  # at the top: below a table it would be that table's
        "my.toml: dropout: must be a table: [dropout] with a type and its keys"),
    "required parameter missing": (
        space_text(batch_size=""),
        "my.toml: batch_size: missing; every space defines lr, batch_size, optimizer "
        "(any type; fixed is allowed)"),
    "required parameter with a condition": (
        space_text(batch_size='[batch_size]\ntype = "fixed"\nvalue = 64\n'
                              'when = { optimizer = "SGD" }\n'),
        "my.toml: batch_size: must not have 'when'; every trial needs batch_size"),
    "when names the parameter itself": (
        space_text(nesterov='[nesterov]\ntype = "categorical"\nchoices = [true, false]\n'
                            'when = { nesterov = true }\n'),
        "my.toml: nesterov: 'when' names the parameter itself"),
    "when names a range": (
        space_text(momentum='[momentum]\ntype = "fixed"\nvalue = 0.9\nwhen = { lr = 0.1 }\n'),
        "my.toml: momentum: 'when' names 'lr', which is float; it must name a categorical or "
        "fixed parameter"),
    "when value not a choice": (
        space_text(momentum='[momentum]\ntype = "fixed"\nvalue = 0.9\n'
                            'when = { optimizer = ["SGD", "SDG"] }\n'),
        "my.toml: momentum: 'when' value 'SDG' is not among optimizer's choices ('SGD', 'Adam')"),
    "when not a table": (
        space_text(momentum='[momentum]\ntype = "fixed"\nvalue = 0.9\nwhen = "SGD"\n'),
        "my.toml: momentum: 'when' must be a table such as { optimizer = \"SGD\" }"),
    "by value not a choice": (
        REQUIRED["lr"] + '[lr.by.optimizer.SDG]\nlow = 0.01\nhigh = 0.1\n'
        + space_text(lr=""),
        "my.toml: lr: 'by' value 'SDG' is not among optimizer's choices ('SGD', 'Adam')"),
    "by names a fixed parameter": (
        REQUIRED["lr"] + '[lr.by.batch_size.64]\nlow = 0.01\nhigh = 0.1\n'
        + space_text(lr="", batch_size='[batch_size]\ntype = "fixed"\nvalue = 64\n'),
        "my.toml: lr: 'by' names 'batch_size', which is fixed; it must name a categorical "
        "parameter"),
    "by range reversed": (
        REQUIRED["lr"] + '[lr.by.optimizer.SGD]\nlow = 0.5\nhigh = 0.1\n' + space_text(lr=""),
        "my.toml: lr: by.optimizer.SGD: low must be below high (got low 0.5, high 0.1)"),
    "by range with another key": (
        REQUIRED["lr"] + '[lr.by.optimizer.SGD]\nlow = 0.01\nhigh = 0.1\nlog = false\n'
        + space_text(lr=""),
        "my.toml: lr: by.optimizer.SGD: unknown key 'log'; allowed: low, high"),
    "by range from 0 on a log scale": (
        REQUIRED["lr"] + '[lr.by.optimizer.SGD]\nlow = 0.0\nhigh = 0.1\n' + space_text(lr=""),
        "my.toml: lr: by.optimizer.SGD: log needs low > 0 (got 0.0)"),
    "conditions in a cycle": (
        space_text(nesterov='[nesterov]\ntype = "categorical"\nchoices = [true, false]\n'
                            'when = { schedule = "cosine" }\n',
                   schedule='[schedule]\ntype = "categorical"\nchoices = ["cosine", "constant"]\n'
                            'when = { nesterov = true }\n'),
        "my.toml: nesterov: 'when' and 'by' go round in a cycle: nesterov -> schedule -> nesterov"),
}


@pytest.mark.parametrize(("text", "expected"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_each_problem_gets_its_own_line(tmp_path, text, expected):
    assert error_lines(tmp_path, text) == [expected]


def test_every_problem_is_reported_at_once(tmp_path):
    text = space_text(lr='[lr]\ntype = "float"\nlow = 0.1\nhigh = 0.01\n',
                      optimizer='[optimizer]\ntype = "categorical"\nchoices = []\n',
                      dropout='[dropout]\ntype = "float"\nlow = 0.0\nhihg = 0.5\n')
    assert error_lines(tmp_path, text) == [
        "my.toml: lr: low must be below high (got low 0.1, high 0.01)",
        "my.toml: optimizer: choices must not be empty",
        "my.toml: dropout: unknown key 'hihg'; allowed: type, low, high, log, step, when, by",
        "my.toml: dropout: missing key 'high'; a range needs low and high",
    ]


def test_a_missing_file_names_the_built_in_spaces(tmp_path):
    missing = tmp_path / "nosuch.toml"
    with pytest.raises(SpaceError) as info:
        load_space(str(missing))
    assert str(info.value) == (f"{missing}: no such file; give a space file's path or a "
                               "built-in space: tutorial, extended")
    with pytest.raises(SpaceError, match="'nosuch' is not a built-in space"):
        builtin_path("nosuch")


def test_a_space_read_from_a_study_names_its_source_in_errors():
    with pytest.raises(SpaceError) as info:
        parse_space(space_text(lr='[lr]\ntype = "float"\nlow = 0\nhigh = 1\nlog = true\n'))
    assert str(info.value) == "<study>: lr: log needs low > 0 (got 0)"
    assert parse_space(space_text(), "mine").name == "mine"
    assert load_space(str(Path(builtin_path("tutorial")))).name == "tutorial"
