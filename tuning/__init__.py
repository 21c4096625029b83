"""The Optuna layer: search space, objective, study, command-line tools."""
