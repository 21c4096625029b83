"""--precision: auto (the default), fp32 or bf16, resolved against the hardware at hand."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuning.study.errors import UsageError

if TYPE_CHECKING:
    import torch

    from model.kernels import HardwareChoice

# The flag's choices; model.loops.PRECISIONS holds the two a run can have (a test keeps
# them equal), written out so that tools which never train need not import torch.
PRECISIONS = ("fp32", "bf16")
PRECISION_CHOICES = ("auto", *PRECISIONS)
DEFAULT_PRECISION = "auto"


def choose_precision(requested: str, device: torch.device) -> HardwareChoice:
    """The precision a run on ``device`` trains in, and why.

    ``auto`` is bf16 autocast where the hardware computes bf16 natively (x86 CPUs with
    avx512_bf16 or AMX, CUDA devices with bf16 arithmetic), float32 elsewhere: emulated bf16
    is several times slower than float32 (docs/decisions.md). ``fp32`` and ``bf16`` are taken
    as given.

    Raises:
        UsageError: ``requested`` is none of PRECISION_CHOICES.
    """
    from model.kernels import HardwareChoice, native_bf16  # torch only for tools that train

    if requested in PRECISIONS:
        return HardwareChoice(requested, f"--precision {requested} was asked for")
    if requested != "auto":
        raise UsageError(f"--precision must be one of {', '.join(PRECISION_CHOICES)}, but got "
                         f"{requested!r}.")
    native, why = native_bf16(device)
    return HardwareChoice("bf16" if native else "fp32", f"auto: {why}")
