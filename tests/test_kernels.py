"""The hardware's choices: native bf16, --precision auto, and the float32 linear kernel."""

from __future__ import annotations

import optuna
import pytest
import torch
from torch.nn import functional as F

from model import kernels
from model.kernels import KERNELS, fp32_kernel, native_bf16
from model.loops import PRECISIONS as LOOP_PRECISIONS
from model.loops import make_optimizer
from model.network import NeuralNetwork
from tests.conftest import run_main
from tuning.study.errors import UsageError
from tuning.training import precision
from tuning.training.precision import PRECISIONS, choose_precision

CPU = torch.device("cpu")
needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(),
                                  reason="this torch build has no oneDNN")


def test_the_flag_and_the_loops_know_the_same_precisions():
    assert PRECISIONS == LOOP_PRECISIONS


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_is_bf16_exactly_where_the_cpu_computes_bf16_natively(monkeypatch, native,
                                                                   expected):
    monkeypatch.setattr(kernels, "cpu_has_native_bf16", lambda: (native, "the probe says so"))
    choice = choose_precision("auto", CPU)
    assert choice.value == expected
    assert choice.reason == "auto: the probe says so"


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("forced", ["fp32", "bf16"])
def test_fp32_and_bf16_are_taken_as_given_whatever_the_hardware(monkeypatch, native, forced):
    monkeypatch.setattr(kernels, "cpu_has_native_bf16", lambda: (native, "probe"))
    assert choose_precision(forced, CPU).value == forced


def test_an_unknown_precision_is_refused_by_name():
    with pytest.raises(UsageError, match="--precision must be one of auto, fp32, bf16"):
        choose_precision("fp16", CPU)


@pytest.mark.parametrize(("supported", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_on_cuda_asks_torch_whether_the_gpu_has_bf16(monkeypatch, supported, expected):
    asked = []

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked.append(including_emulation)
        return supported

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Some GPU")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert choose_precision("auto", torch.device("cuda")).value == expected
    assert asked == [False]  # emulated bf16 does not count


def test_the_cpu_probe_reads_torch_then_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(kernels, "cpu_facts", lambda: ("AuthenticAMD", {"avx2", "fma"}))
    assert kernels.cpu_has_native_bf16()[0] is False
    monkeypatch.setattr(kernels, "cpu_facts", lambda: ("AuthenticAMD", {"avx512_bf16"}))
    assert kernels.cpu_has_native_bf16() == (True, "the CPU has avx512_bf16 (/proc/cpuinfo)")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert kernels.cpu_has_native_bf16()[1].startswith("the CPU has AMX")


def test_other_devices_stay_fp32_under_auto():
    assert native_bf16(torch.device("mps"))[0] is False
    assert choose_precision("auto", torch.device("mps")).value == "fp32"


@pytest.mark.parametrize(("vendor", "flags", "expected"), [
    ("AuthenticAMD", {"avx2", "avx512f"}, "onednn"),  # MKL's AVX2 path on AVX-512 hardware
    ("GenuineIntel", {"avx2", "avx512f"}, "aten"),  # MKL's AVX-512 path
    ("AuthenticAMD", {"avx2"}, "aten"),  # no AVX-512: nothing faster to take
    ("", set(), "aten"),  # nothing known (not Linux, or not x86)
])
def test_the_float32_kernel_follows_the_cpu(monkeypatch, vendor, flags, expected):
    monkeypatch.setattr(kernels, "cpu_facts", lambda: (vendor, flags))
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    assert fp32_kernel(CPU).value == expected
    assert fp32_kernel(torch.device("cuda")).value == "aten"


def test_without_onednn_the_kernel_is_torchs_own(monkeypatch):
    monkeypatch.setattr(kernels, "cpu_facts", lambda: ("AuthenticAMD", {"avx512f"}))
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert fp32_kernel(CPU) == kernels.HardwareChoice("aten", "this torch build has no oneDNN")


def _steps(kernel: str, optimizer: str, steps: int = 5) -> tuple[list[float], NeuralNetwork]:
    torch.manual_seed(3)
    model = NeuralNetwork(kernel=kernel)
    opt = make_optimizer(optimizer, model.parameters(), 1e-3)
    data = torch.Generator().manual_seed(4)
    losses = []
    for _ in range(steps):
        x = torch.rand(64, 1, 28, 28, generator=data)
        y = torch.randint(0, 10, (64,), generator=data)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, model


@needs_onednn
# SGD moves each weight by lr x its gradient, so float32 rounding stays rounding; Adam and
# RMSprop divide by a gradient's running size, which turns rounding in a near-zero gradient
# into a step of up to lr (1e-3) for Adam and up to 10 lr for RMSprop's first steps (no
# bias correction: g / sqrt(0.01 g^2)): a tenth of a step of lr is Adam's tolerance, half a
# step RMSprop's.
@pytest.mark.parametrize(("optimizer", "atol"), [("SGD", 1e-6), ("Adam", 1e-4),
                                                 ("RMSprop", 5e-4)])
def test_the_onednn_kernel_trains_the_same_float32_steps_as_torchs(optimizer, atol):
    aten_losses, aten = _steps("aten", optimizer)
    onednn_losses, onednn = _steps("onednn", optimizer)
    assert onednn_losses == pytest.approx(aten_losses, rel=1e-4)
    for (name, a), b in zip(aten.state_dict().items(), onednn.state_dict().values(),
                            strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=atol), name
        assert b.dtype == torch.float32


@needs_onednn
def test_the_onednn_gradients_are_torchs():
    torch.manual_seed(0)
    x = torch.randn(32, 784, requires_grad=True)
    w = torch.randn(512, 784, requires_grad=True)
    b = torch.randn(512, requires_grad=True)
    grad = torch.randn(32, 512)
    expected = torch.autograd.grad(F.linear(x, w, b), (x, w, b), grad)
    got = torch.autograd.grad(kernels.linear(x, w, b, "onednn"), (x, w, b), grad)
    for e, g in zip(expected, got, strict=True):
        assert torch.allclose(e, g, rtol=1e-4, atol=1e-3)


def test_under_bf16_autocast_the_kernel_is_autocasts():
    model = NeuralNetwork(kernel="onednn")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.rand(4, 1, 28, 28)).dtype == torch.bfloat16


def test_an_unknown_kernel_is_refused():
    assert KERNELS == ("aten", "onednn")
    with pytest.raises(ValueError, match="unknown kernel 'mkl'"):
        NeuralNetwork(kernel="mkl")


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_a_search_under_auto_says_what_it_chose_and_records_it(monkeypatch, tmp_path, idx_dir,
                                                              native, expected):
    monkeypatch.setattr(kernels, "cpu_has_native_bf16", lambda: (native, "the probe says so"))
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = run_main("tuning.search", "--storage", url, "--data-dir", str(idx_dir),
                      "--val-size", "100", "--n-trials", "1", "--epochs", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"Precision {expected}: auto: the probe says so." in result.stdout
    trial = optuna.load_study(study_name="fashion-mnist", storage=url).trials[0]
    assert trial.user_attrs["precision"] == expected
    assert trial.user_attrs["fp32_kernel"] == fp32_kernel(CPU).value
    assert precision.DEFAULT_PRECISION == "auto"
