"""What the hardware computes fast: native bf16, and the float32 matrix-product kernel.

Two facts decide how a network trains fastest on a machine, and both are asked of torch (or,
where torch cannot tell, of the CPU's flags), never assumed from one machine:

- Native bf16. Where the hardware has bf16 arithmetic (x86 CPUs with avx512_bf16 or AMX,
  CUDA devices of compute capability 8.0 and up), bf16 autocast runs the matrix products at
  twice float32's rate or more; elsewhere oneDNN emulates bf16 and it is several times slower
  than float32 (docs/performance.md).
- The float32 kernel. torch's float32 matrix product on the CPU is MKL's, and MKL takes its
  AVX2 path on CPUs that are not Intel's even where they have AVX-512: on a Zen 5 EPYC it tops
  out near 210 GFLOP/s on this network's shapes, where oneDNN's float32 matrix product (the
  one inductor calls, ``torch.ops.mkldnn._linear_pointwise``) runs the same products at
  330-480 GFLOP/s, in float32 arithmetic. ``fp32_kernel()`` picks oneDNN exactly there: an
  x86 CPU with AVX-512 whose vendor is not Intel. Everywhere else (Intel, AVX2-only CPUs,
  ARM, accelerators) torch's own kernels stay, as before. ``python -m benchmarks.epoch``
  measures both kernels on the machine at hand and says which one the rule picked.

The choice is a rule on the hardware, not a timing taken at start-up, so that one machine
always computes the same numbers for the same seed (a retrain replays its trial).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

KERNELS = ("aten", "onednn")  # torch's own float32 linear (MKL on x86), or oneDNN's


@dataclass(frozen=True)
class HardwareChoice:
    """A choice made for the hardware, with the reason in words (printed by the tools)."""

    value: str
    reason: str


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first CPU's fields in /proc/cpuinfo (vendor_id, flags, model name, ...), read once
    per process; empty where there is no such file (not Linux)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_name() -> str:
    """This CPU's model name and family/model numbers, for the header of a table; the
    platform's machine type where /proc/cpuinfo does not say."""
    fields = _cpuinfo()
    if "model name" not in fields:
        import platform

        return platform.machine()
    return (f"{fields['model name']} (family {fields.get('cpu family', '?')}, model "
            f"{fields.get('model', '?')})")


def cpu_facts() -> tuple[str, set[str]]:
    """This CPU's vendor id and feature flags (empty where /proc/cpuinfo does not say)."""
    fields = _cpuinfo()
    return fields.get("vendor_id", ""), set(fields.get("flags", "").split())


def cpu_has_native_bf16() -> tuple[bool, str]:
    """Whether this x86 CPU computes bf16 itself (avx512_bf16 or AMX), and what says so."""
    cpu = getattr(torch, "cpu", None)
    for probe, name in (("_is_avx512_bf16_supported", "avx512_bf16"),
                        ("_is_amx_tile_supported", "AMX")):
        check = getattr(cpu, probe, None)
        if check is not None and check():
            return True, f"the CPU has {name} (torch.cpu.{probe})"
    flags = cpu_facts()[1]
    for flag, name in (("avx512_bf16", "avx512_bf16"), ("amx_bf16", "AMX")):
        if flag in flags:
            return True, f"the CPU has {name} (/proc/cpuinfo)"
    return False, "the CPU has neither avx512_bf16 nor AMX, so bf16 would be emulated"


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and the reason in words."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = torch.cuda.get_device_name(index)
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"{name} computes bf16 natively"
        return False, f"{name} has no native bf16"
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False, f"bf16 on {device.type} is not known to be faster than float32"


def fp32_kernel(device: torch.device) -> HardwareChoice:
    """The float32 linear kernel for ``device``: "onednn" where MKL runs its AVX2 code on
    an AVX-512 CPU (x86, not Intel, oneDNN present), "aten" (torch's own) everywhere else."""
    if device.type != "cpu":
        return HardwareChoice("aten", f"torch's own kernels on {device.type}")
    vendor, flags = cpu_facts()
    if not torch.backends.mkldnn.is_available():
        return HardwareChoice("aten", "this torch build has no oneDNN")
    if "avx512f" not in flags:
        return HardwareChoice("aten", "no AVX-512 on this CPU: MKL's float32 path is its best")
    if vendor == "GenuineIntel":
        return HardwareChoice("aten", "MKL takes its AVX-512 path on Intel CPUs")
    return HardwareChoice(
        "onednn", f"MKL takes its AVX2 path on this {vendor or 'non-Intel'} CPU; oneDNN "
        "uses its AVX-512")


def _onednn_mm(a: Tensor, b_t: Tensor) -> Tensor:
    """``a @ b_t.T`` on oneDNN's float32 matrix product (strided operands are fine)."""
    return torch.ops.mkldnn._linear_pointwise(a, b_t, None, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """``F.linear`` with every matrix product (forward and both gradients) on oneDNN."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_mm(grad, weight.t())  # grad @ W
        if ctx.needs_input_grad[1]:
            grad_w = _onednn_mm(grad.t(), x.t())  # grad.T @ x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, kernel: str) -> Tensor:
    """``F.linear`` on ``kernel``; oneDNN only for 2-D float32 CPU work outside autocast."""
    if (kernel == "onednn" and x.dim() == 2 and x.dtype == torch.float32
            and x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)
