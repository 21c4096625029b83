"""Search spaces: the TOML files, how they are parsed and checked, and a point of a space.

``file`` loads a space file (built-in ones are in ``builtin/``) and samples it on an Optuna
trial; ``check`` reads and checks a file's text, reporting every problem one line each;
``hyperparameters`` is one sampled point (``Hyperparameters``), the knobs the network and the
training loops take, and the tutorial's configuration.
"""
