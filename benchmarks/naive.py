"""The naive search the suite is measured against: what a first Optuna script looks like.

The tutorial's own loop (torchvision dataset + ToTensor + DataLoader, its train and test
loops), the same search space, Optuna's random sampler, no pruning, 10 epochs per trial, an
in-memory study. It trains on the same 50,000 images and scores on the same 10,000 validation
images as the suite, and appends one JSON line per epoch (trial, epoch, validation accuracy,
seconds since start, the epoch's own seconds) to --events, so benchmarks/search.py can read
its progress.

    python -m benchmarks.naive --events naive.jsonl --seed 0 --timeout 300
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import optuna
import torch
from torch import nn
from torch.utils.data import DataLoader

from benchmarks.tutorial import (
    test_loop,
    torchvision_root,
    train_loop,
    tutorial_dataset,
    tutorial_split,
)
from model.data import DEFAULT_DATA_DIR, locate
from model.loops import OPTIMIZERS
from model.network import NeuralNetwork
from tuning.space.hyperparameters import suggest
from tuning.study.protocol import SPLIT_SEED, VAL_SIZE

EPOCHS = 10  # as in the tutorial


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.naive", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=Path, required=True, help="JSON lines file to append")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--val-size", type=int, default=VAL_SIZE)
    args = parser.parse_args(argv)
    start = time.time()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    with torchvision_root(locate(args.data_dir)) as root, args.events.open("a") as events:
        train_data, val_data = tutorial_split(tutorial_dataset(root), args.val_size, SPLIT_SEED)
        loss_fn = nn.CrossEntropyLoss()

        def objective(trial: optuna.Trial) -> float:
            params = suggest(trial)
            torch.manual_seed(args.seed * 100_003 + trial.number)
            model = NeuralNetwork()
            optimizer = OPTIMIZERS[params.optimizer](model.parameters(), lr=params.lr)
            train_loader = DataLoader(train_data, batch_size=params.batch_size, shuffle=True)
            val_loader = DataLoader(val_data, batch_size=params.batch_size)
            best = 0.0
            for epoch in range(1, EPOCHS + 1):
                began = time.time()
                train_loop(train_loader, model, loss_fn, optimizer)
                _, accuracy = test_loop(val_loader, model, loss_fn)
                best = max(best, accuracy)
                events.write(json.dumps({"trial": trial.number, "epoch": epoch,
                                         "val_accuracy": accuracy,
                                         "seconds": time.time() - start,
                                         "epoch_seconds": time.time() - began}) + "\n")
                events.flush()
            return best

        study = optuna.create_study(direction="maximize",
                                    sampler=optuna.samplers.RandomSampler(seed=args.seed),
                                    pruner=optuna.pruners.NopPruner())
        try:
            study.optimize(objective, timeout=args.timeout)
        except KeyboardInterrupt:
            return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
