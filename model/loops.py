"""Train and evaluation loops over tensors: batches are slices, never per-sample work."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from model.data import IMAGE_SIDE, Tensors
from model.schedule import StepSchedule

# Name -> optimizer class; the names are the ones users type and the study stores.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "SGD": torch.optim.SGD,
    "Adam": torch.optim.Adam,
    "AdamW": torch.optim.AdamW,
    "RMSprop": torch.optim.RMSprop,
}
# Arithmetic of the matrix products: fp32 throughout, or bf16 autocast with fp32 weights.
PRECISIONS = ("fp32", "bf16")
EVAL_BATCH = 10_000  # one forward pass scores the whole validation split; no gradients kept


def make_optimizer(name: str, params: Iterable[Tensor], lr: float, *,
                   weight_decay: float = 0.0, momentum: float = 0.0,
                   nesterov: bool = False) -> torch.optim.Optimizer:
    """Build the optimizer called ``name`` (a key of ``OPTIMIZERS``) with learning rate ``lr``.

    ``weight_decay`` is decoupled from the adaptive step (AdamW's way) for Adam and AdamW; SGD
    and RMSprop add it to the gradient, as torch does. ``momentum`` and ``nesterov`` are
    SGD's (Nesterov needs momentum > 0). The defaults are the tutorial's: plain SGD, Adam and
    RMSprop. Where torch has a fused kernel for it (SGD, Adam, AdamW), that kernel is used: one
    pass over all parameters per step instead of one per tensor and operation, the same update
    rule. The others (RMSprop) take the multi-tensor (foreach) path, which on the CPU is not
    the default.
    """
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(OPTIMIZERS)}") from None
    options: dict[str, object] = {"lr": lr}
    if weight_decay or name == "AdamW":  # AdamW's own default would be 0.01
        options["weight_decay"] = weight_decay
        if name == "Adam":
            options["decoupled_weight_decay"] = True
    if name == "SGD" and momentum:
        options |= {"momentum": momentum, "nesterov": nesterov}
    if "fused" in inspect.signature(cls.__init__).parameters:
        return cls(params, fused=True, **options)
    return cls(params, foreach=True, **options)


def warm_up_optimizers() -> None:
    """Build and drop one optimizer, so that the next one's time is its own.

    A process's first optimizer imports torch._dynamo (about 1.5 s on this project's CPU
    machine); called at start-up, that cost is not charged to the first trial or retrain.
    """
    make_optimizer("SGD", [torch.zeros(1, requires_grad=True)], 0.1)


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of ``precision`` on ``device`` (disabled for fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def shuffle_buffer(data: Tensors) -> Tensors:
    """Uninitialised tensors shaped like ``data``, to shuffle into every epoch.

    Reusing one buffer avoids allocating (and page-faulting in) a fresh copy of the training
    images each epoch: 188 MB for FashionMNIST's 50,000 training images.
    """
    return Tensors(torch.empty_like(data.images), torch.empty_like(data.labels))


def flush_denormals() -> None:
    """Make this process treat denormal floats as zero on the CPU; call it before any torch work.

    Optimizer state of parameters whose gradient stays zero (dead ReLU units) decays toward
    zero: RMSprop's and Adam's running squares cross into the denormal range within an epoch
    or two, and arithmetic on denormals is many times slower on x86. An RMSprop trial at batch
    16 went from 7 s to 25 s per epoch that way. The setting is per thread and torch's worker
    threads copy it from the main thread when they start, hence "before any torch work".
    Values below 1.2e-38 change nothing measurable in the updates.
    """
    torch.set_flush_denormal(True)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Tensors,
    batch_size: int,
    generator: torch.Generator,
    *,
    precision: str = "fp32",
    buffer: Tensors | None = None,
    schedule: StepSchedule | None = None,
    label_smoothing: float = 0.0,
    hflip: float = 0.0,
    average: AveragedModel | None = None,
) -> float:
    """Train one epoch over ``data`` in a fresh shuffled order; return the mean training loss.

    The order comes from ``generator`` (a CPU generator), so a seeded generator replays the
    same epochs. The last batch may be smaller, as with the tutorial's DataLoader. A NaN or
    infinite loss is returned as such; the caller decides what to do with it. ``buffer`` (from
    ``shuffle_buffer(data)``) receives the shuffled copy; without it one is allocated.
    ``precision`` "bf16" runs the forward pass under bf16 autocast; weights, gradients and the
    optimizer state stay float32. ``schedule`` sets each step's learning rate (None: it stays
    as the optimizer has it); ``label_smoothing`` softens the training targets (the returned
    loss is the smoothed one). ``hflip`` is the probability that a training image is
    mirrored left to right (augmentation; on FashionMNIST, whose shoes all face one way, it
    cost accuracy in 10 epochs: docs/results.md); the draws come from
    ``generator`` after the order, and only where ``hflip`` > 0, so without it the stream of
    draws is the tutorial's. ``average`` (``weight_average``), where given, takes the
    weights after every step into its moving average.
    """
    n = len(data)
    device = data.images.device
    order = torch.randperm(n, generator=generator).to(device)
    if buffer is None:
        buffer = shuffle_buffer(data)
    images = torch.index_select(data.images, 0, order, out=buffer.images)
    labels = torch.index_select(data.labels, 0, order, out=buffer.labels)
    model.train()
    # Summing on the device avoids a host sync per step; one .item() at the end.
    total = torch.zeros((), device=device)
    for start in range(0, n, batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        if hflip:
            x = mirror(x, torch.rand(len(y), generator=generator).to(device) < hflip)
        with autocast(device, precision):
            loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if schedule is not None:
            schedule.apply(optimizer)
        optimizer.step()
        if average is not None:
            average.update_parameters(model)
        total += loss.detach() * y.shape[0]
    return float(total) / n


def mirror(images: Tensor, which: Tensor) -> Tensor:
    """``images`` (flattened, N x 784) with the rows where ``which`` is True mirrored left to
    right; a new tensor, the input stays as it is."""
    square = images.view(-1, IMAGE_SIDE, IMAGE_SIDE)
    return torch.where(which.view(-1, 1, 1), square.flip(-1), square).view_as(images)


def weight_average(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights, ``decay`` per step (a copy of the
    model, which ``train_epoch(average=...)`` updates after every step; its ``module`` is the
    averaged network, with the model's class and state_dict keys)."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


@torch.inference_mode()
def evaluate(model: nn.Module, data: Tensors, *, precision: str = "fp32") -> tuple[float, float]:
    """Return (mean cross-entropy loss, accuracy in [0, 1]) of ``model`` on ``data``."""
    model.eval()
    device = data.images.device
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, len(data), EVAL_BATCH):
        x = data.images[start : start + EVAL_BATCH]
        y = data.labels[start : start + EVAL_BATCH]
        with autocast(device, precision):
            logits = model(x)
        total_loss += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(dim=1) == y).sum()
    n = len(data)
    return float(total_loss) / n, int(correct) / n


@dataclass(frozen=True)
class EpochResult:
    """What one epoch measured; the validation numbers are None where nothing was scored."""

    epoch: int  # from 1
    epochs: int
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float  # training and scoring together
    # The network the validation numbers are of: the trained one, or its weight average.
    scored: nn.Module | None = field(default=None, repr=False, compare=False)


def run_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: Tensors,
    val: Tensors | None,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    precision: str = "fp32",
    buffer: Tensors | None = None,
    schedule: StepSchedule | None = None,
    label_smoothing: float = 0.0,
    hflip: float = 0.0,
    ema_decay: float = 0.0,
) -> Iterator[EpochResult]:
    """Train up to ``epochs`` epochs, scoring ``val`` (if given) after each; yield each epoch.

    The one epoch loop of a search trial and of a retrain: they differ only in what they do
    with each epoch's numbers (report them to a pruner, keep the best weights, stop on a NaN),
    so the caller consumes the epochs and may stop early by leaving the loop. With
    ``ema_decay`` > 0 the network scored (and ``EpochResult.scored``, the one to keep) is the
    exponential moving average of the weights over the steps (``weight_average``); otherwise
    ``model`` itself.
    """
    buffer = buffer if buffer is not None else shuffle_buffer(train)
    average = weight_average(model, ema_decay) if ema_decay > 0 else None
    scored = average.module if average is not None else model
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        train_loss = train_epoch(model, optimizer, train, batch_size, generator,
                                 precision=precision, buffer=buffer, schedule=schedule,
                                 label_smoothing=label_smoothing, hflip=hflip,
                                 average=average)
        val_loss, val_accuracy = (evaluate(scored, val, precision=precision)
                                  if val is not None else (None, None))
        yield EpochResult(epoch, epochs, train_loss, val_loss, val_accuracy,
                          time.perf_counter() - start, scored)
