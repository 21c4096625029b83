"""The device a tool trains on, from its --device flag."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuning.study.errors import UsageError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")  # --device choices; auto picks the first available


def resolve_device(name: str) -> torch.device:
    """Turn --device (auto, cpu, cuda, mps) into a torch device that is really there.

    Raises:
        UsageError: the asked-for accelerator is not available on this machine.
    """
    import torch  # here: the flag's choices (DEVICES) serve tools that never load torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if name not in available:
        raise UsageError(f"--device must be one of {', '.join(DEVICES)}, but got {name!r}.")
    if not available[name]:
        raise UsageError(
            f"--device {name} was asked for, but torch {torch.__version__} sees no {name} "
            "device here; use --device cpu or --device auto."
        )
    return torch.device(name)
