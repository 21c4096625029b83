"""Score a trained network on held-out images: loss, accuracy, per class, confusion matrix."""

from __future__ import annotations

from typing import Any

import torch

from model.data import CLASSES, Tensors
from model.loops import evaluate


@torch.inference_mode()
def score(model: torch.nn.Module, test: Tensors) -> dict[str, Any]:
    """Loss, accuracy, per-class accuracy and confusion matrix of ``model`` on ``test``."""
    loss, accuracy = evaluate(model, test)
    model.eval()
    predicted = model(test.images).argmax(dim=1)
    n = len(CLASSES)
    counts = torch.bincount(test.labels * n + predicted, minlength=n * n).reshape(n, n).cpu()
    per_class = {
        name: (int(counts[k, k]) / int(counts[k].sum())) if int(counts[k].sum()) else None
        for k, name in enumerate(CLASSES)
    }
    return {
        "test_accuracy": accuracy,
        "test_loss": loss,
        "test_size": len(test),
        "per_class_accuracy": per_class,
        "confusion_matrix": {
            "classes": list(CLASSES),
            "rows": "true class",
            "columns": "predicted class",
            "counts": counts.tolist(),
        },
    }
