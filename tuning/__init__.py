"""fashion-tune's Optuna layer: the commands at this level, the library in its packages.

Commands (``python -m tuning.<name>``): search, confirm, export, train, report, dashboard,
spacetool, whatif. What they share for parsing and printing: ``cli``. Beside them, for
notebooks: ``api`` (the same steps as calls that return values). The library: ``study``
(where studies live and what they record), ``space`` (search-space files), ``training`` (the
objective and the recipe a trial trains by), ``workers`` (the trial loop, the supervisor,
signals, cores), ``results`` (confirmation, selection, files, the retrain's steps, the test
result, artifacts, pictures). docs/layout.md maps them.
"""
