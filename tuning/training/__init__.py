"""Training a trial: the Optuna objective and what trains a configuration the same way again.

``objective`` is the Optuna objective (build the network, run the epochs, report, prune);
``retrain`` is the recipe it shares with confirm and train (seeded start, optimizer, schedule,
per-epoch history); ``device`` and ``precision`` resolve ``--device`` and ``--precision``
against the hardware at hand.
"""
