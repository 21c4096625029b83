"""fashion-tune's Optuna layer: the commands at this level, the library in its packages.

Commands (``python -m tuning.<name>``): search, confirm, export, train, report, dashboard,
spacetool, whatif. What they share for parsing and printing: ``cli``. The library: ``study``
(where studies live and what they record), ``space`` (search-space files), ``training`` (the
objective and the recipe a trial trains by), ``workers`` (the trial loop, the supervisor,
signals, cores), ``results`` (confirmation, selection, files, the test result, pictures).
docs/layout.md maps them.
"""
