"""The optimiser update of one training step, with overflowing and non-finite steps skipped and
counted, never raised (decision 23).

Three outcomes per step, the same on every DDP rank:

* ``ok``: backward, optional clipping, ``scaler.step`` and ``scaler.update`` as usual.
* ``overflow``: the loss is finite but a gradient scaled by the AMP ``GradScaler`` is not, either
  a parameter gradient (GradScaler finds it itself) or the student's saliency gradients
  (``train.engine.steps`` leaves the term out and reports ``saliency_overflow``; the overflow is then
  written into one parameter gradient where GradScaler's own check finds it). GradScaler skips the
  optimiser step and reduces its scale through ``scaler.update`` with its found-inf record, exactly
  as for an overflow of the task loss.
* ``nonfinite``: the loss is NaN/Inf (bad features, a diverging run), or a gradient is non-finite
  without any loss scale. No optimiser step runs (for a NaN/Inf loss no backward pass either); the
  weights, the optimiser state and the scale stay as they were, and the caller puts back the
  buffers the forward pass wrote (:func:`buffer_snapshot`: BatchNorm running statistics take in
  the NaN). :class:`SkipCounter` stops the run after ``--max-bad-steps`` of them in a row.

Under DDP every rank must take the same branch (a rank that skips the backward pass while another
runs it would hang in the gradient all-reduce), so the per-rank flags are summed over processes
before the decision.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from train.engine.profiling import StepTimer
from train.runtime.distributed import all_reduce_sum

OK, OVERFLOW, NONFINITE = "ok", "overflow", "nonfinite"


def make_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """The AMP loss scaler of a run on ``device`` (disabled, a pass-through, without AMP)."""
    return torch.amp.GradScaler(device.type, enabled=amp)


def buffer_snapshot(model: nn.Module) -> list[torch.Tensor]:
    """Copies of ``model``'s buffers (a few thousand numbers for the PTv3 presets), taken before a
    step's forward pass so that :func:`restore_buffers` can undo what a NaN forward wrote."""
    return [b.detach().clone() for b in model.buffers()]


def restore_buffers(model: nn.Module, snapshot: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for buf, saved in zip(model.buffers(), snapshot):
            buf.copy_(saved)


def _grads(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                yield p.grad


def _finite(optimizer: torch.optim.Optimizer) -> bool:
    """All parameter gradients finite: GradScaler's own multi-tensor check (one kernel per device and
    dtype, scale 1 so the gradients are unchanged) and one host read for all of them."""
    grads = list(_grads(optimizer))
    if not grads:
        return True
    found = torch.zeros((), device=grads[0].device)
    for (device, _), group in _by_device_and_dtype(grads).items():
        flag = torch.zeros((), device=device)
        torch._amp_foreach_non_finite_check_and_unscale_(group, flag, torch.ones((), device=device))
        found = found + flag.to(found.device)
    return not bool(found)


def _by_device_and_dtype(tensors: list[torch.Tensor]) -> dict[tuple[torch.device, torch.dtype], list[torch.Tensor]]:
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return groups


def _record_overflow(optimizer: torch.optim.Optimizer) -> None:
    """Write an overflow found outside the parameter gradients (the saliency pass) into one of them,
    where ``GradScaler.unscale_`` looks for it: the step is then skipped and the scale reduced by
    GradScaler's own rule (backoff factor, growth tracker reset)."""
    grad = next(_grads(optimizer), None)
    if grad is None:
        raise RuntimeError("an overflow was reported but the backward pass left no parameter gradient")
    grad.view(-1)[0] = float("inf")


def apply_update(
    loss: torch.Tensor,
    saliency_overflow: bool | torch.Tensor,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    grad_clip: float | None,
    timer: StepTimer,
) -> str:
    """Backward and optimiser step of one training step; returns ``OK``, ``OVERFLOW`` or ``NONFINITE``.

    ``loss``: the step's total loss (unscaled); ``saliency_overflow``: the step function found the
    scaled saliency gradients non-finite (a bool, or the step's 0-d flag tensor); ``model``: the
    (DDP-wrapped or plain) model whose parameters ``optimizer`` holds. The scheduler is left to the
    caller.

    Host synchronisations (decision 39): one read of the two flags before the backward pass; without
    AMP one read of the gradients' finiteness; with AMP the loss scale before and after the step.
    A fused optimiser (``train.engine.optim``) takes GradScaler's found-inf flag on the device.
    """
    flags = torch.stack([~torch.isfinite(loss.detach()),
                         torch.as_tensor(saliency_overflow, device=loss.device).reshape(()).bool()]).float()
    bad_loss, overflow = (v > 0 for v in all_reduce_sum(flags).tolist())
    if bad_loss:
        return NONFINITE
    with timer.section("backward"):
        scaler.scale(loss).backward()
    with timer.section("optimizer"):
        if overflow:
            _record_overflow(optimizer)
        if not scaler.is_enabled() and not _finite(optimizer):
            return NONFINITE  # no loss scale: a non-finite gradient is a real divergence, not an overflow
        scale_before = scaler.get_scale()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    return OVERFLOW if scaler.is_enabled() and scaler.get_scale() < scale_before else OK


@dataclass
class SkipCounter:
    """Skipped steps of one stage: totals for the logs and the progress bar, and the stop rule.

    ``max_bad_steps`` consecutive ``NONFINITE`` steps stop the run with :class:`FloatingPointError`
    (its message says what to change). An ``OK`` step ends a streak; an ``OVERFLOW`` step neither
    ends nor extends it (its loss was finite, but it changed no weight either).
    """

    max_bad_steps: int
    overflow: int = 0
    nonfinite: int = 0
    streak: int = 0

    def record(self, outcome: str) -> None:
        if outcome == OK:
            self.streak = 0
        elif outcome == OVERFLOW:
            self.overflow += 1
        elif outcome == NONFINITE:
            self.nonfinite += 1
            self.streak += 1
        else:
            raise ValueError(f"unknown step outcome {outcome!r}; expected one of {(OK, OVERFLOW, NONFINITE)}")

    def stop_if_exhausted(self, stage: str, step: int, logs: dict[str, Any]) -> None:
        """Raise the stop message once ``max_bad_steps`` bad steps came in a row (after the caller
        logged the last one)."""
        if self.streak >= self.max_bad_steps:
            raise FloatingPointError(
                f"stage {stage}: {self.streak} consecutive steps (the last at step {step}) had a NaN/Inf loss "
                f"or gradient (terms {logs}); they were skipped, so the weights are those of the last good "
                "step and checkpoint_last.pt in the stage's output folder is the last checkpoint written "
                "before them. Check the input features, lower --lr or the lambda_* weights or set "
                "--grad-clip, then --resume; --max-bad-steps sets how many such steps in a row are tolerated"
            )

    def postfix(self) -> dict[str, int]:
        """What the progress bar shows: the skipped steps so far."""
        return {"overflow": self.overflow, "bad": self.nonfinite}
