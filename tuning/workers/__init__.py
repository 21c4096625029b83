"""Processes that run trials: the trial loop, the supervisor of ``--workers``, signals, cores.

``trial_loop`` runs trials toward a study-wide ``--n-trials`` however many processes share the
study; ``supervisor`` starts N worker processes and relays their output and their end; ``cluster``
runs the worker loops as tasks on a Dask cluster (``--cluster``);
``signals`` turns Ctrl-C, SIGTERM and SIGHUP into one clean stop; ``cores`` counts the CPU cores
and the other fashion-tune processes training on them.
"""
