"""What comes after the search: confirming, choosing, the files written, the test result.

``confirmation`` trains the best configurations again from fresh seeds; ``selection`` decides
which trial a study stands for; ``files`` writes and reads every file the suite produces (the
best configuration, weights, metrics) atomically; ``tables`` makes the trials and per-epoch
CSVs; ``holdout`` records the test result on the study and finds its file again;
``retraining`` runs train's steps (for the command and the API); ``artifacts`` keeps the
study's results in an Optuna artifact store beside it; ``replay`` replays recorded curves
under another pruner; ``pictures`` draws the report's figures.
"""
