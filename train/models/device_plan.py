"""The device side of the batch plan (decision 40): ``DevicePlan``, the views of a host
``BatchPlan``'s arrays on one device, made on first use, and ``DeviceRulebook``. Kept apart from
``train.models.plan`` so that the host side imports without torch (decision 55).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch

from train.models.packing import buffer_offset
from train.models.plan import BatchPlan, ConvRulebook, PatchLayout, PlanKey, PoolTable, _ITEM_KINDS


@dataclass(frozen=True)
class DeviceRulebook:
    """A ``ConvRulebook`` as device tensors, with the kernel's number of offsets. ``counts`` (K,):
    the pairs of each offset, where the convolution is traced into an ONNX graph from the real pairs
    only (``train.models.graph_inputs.rulebook_pairs``, decision 55); None elsewhere."""

    gather: torch.Tensor
    scatter: torch.Tensor
    group_offset: torch.Tensor
    rows: int
    offsets: int
    counts: Optional[torch.Tensor] = None


class DevicePlan:
    """Device views of a ``BatchPlan``'s arrays, each made on first use (no device-to-host traffic
    and no host computation: every array is built by the host plan). On the CPU the tensors share
    the host arrays' memory; on a device, a plan that arrived packed (``BatchPlan.buffer``) is
    copied in one transfer (:meth:`upload`) and its arrays are views of that copy."""

    def __init__(self, host: BatchPlan, device: torch.device):
        self.host = host
        self.device = device
        self._tensors: dict[tuple[Any, ...], Any] = {}
        self._buffer: Optional[torch.Tensor] = None

    def upload(self) -> Optional[torch.Tensor]:
        """Copy the host plan's packed buffer to the device (asynchronous from pinned memory, on the
        current stream) unless done; returns the device buffer (None on the CPU or when unpacked)."""
        if self._buffer is None and self.host.buffer is not None and self.device.type != "cpu":
            self._buffer = self.host.buffer.to(self.device, non_blocking=True)
        return self._buffer

    def _get(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        if key not in self._tensors:
            self._tensors[key] = build()
        return self._tensors[key]

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        """``array`` on the device: a view of the uploaded buffer when it lies in the host plan's
        packed buffer, else its own copy (on the CPU: the array's memory)."""
        if self.device.type == "cpu":
            return torch.from_numpy(np.ascontiguousarray(array))
        buffer = self.upload()
        at = None if buffer is None else buffer_offset(self.host.buffer, array)
        if at is None:
            return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, non_blocking=True)
        return buffer[at:at + array.nbytes].view(_TORCH_DTYPES[array.dtype.type]).view(array.shape)

    def level_tensor(self, i: int, name: str) -> torch.Tensor:
        """A field of ``HostLevel`` i (offset, cluster, index, grid, batch) on the device."""
        return self._get(("level", i, name), lambda: self.tensor(getattr(self.host.level(i), name)))

    def rulebook(self, i: int, kernel_size: int) -> "DeviceRulebook":
        """Level i's convolution rulebook for ``kernel_size`` (``ConvRulebook``) on the device."""

        def build() -> DeviceRulebook:
            book: ConvRulebook = self.host.item(("rulebook", i, kernel_size))
            return DeviceRulebook(self.tensor(book.gather), self.tensor(book.scatter),
                                  self.tensor(book.group_offset), book.rows, kernel_size**3)

        return self._get(("rulebook", i, kernel_size), build)

    def pool_table(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Level i's ``PoolTable`` on the device: (N_i, S) members (level i - 1 points) of each
        level-i point, padded with N_{i-1}, and (N_{i-1},) the slot of each member."""

        def build() -> tuple[torch.Tensor, torch.Tensor]:
            table: PoolTable = self.host.item(("pool", i))
            return self.tensor(table.members), self.tensor(table.slot)

        return self._get(("pool", i), build)

    def patches(self, i: int, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Level i's patch layout for every curve: gather (k, R, L) and scatter (k, N_i)."""

        def build() -> tuple[torch.Tensor, torch.Tensor]:
            layout: PatchLayout = self.host.item(("patches", i, patch_size))
            return self.tensor(layout.gather), self.tensor(layout.scatter)

        return self._get(("patches", i, patch_size), build)

    def patch_mask(self, i: int, patch_size: int, dtype: torch.dtype) -> Optional[torch.Tensor]:
        """Additive key mask (R, 1, 1, L) of level i's patches in ``dtype`` (0 real, -inf padding),
        or None when every slot is real; one per dtype."""

        def build() -> Optional[torch.Tensor]:
            mask = self.host.item(("patch_mask", i, patch_size))
            return None if mask is None else self.tensor(mask).to(dtype)

        return self._get(("patch_mask", i, patch_size, dtype), build)

    def spconv_state(self, i: int) -> tuple[torch.Tensor, list[int], dict[str, Any]]:
        """spconv's view of level i: indices (N_i, 4) int32 (cloud, x, y, z), the spatial shape and
        the rulebook dictionary every spconv layer on this level fills and reuses."""

        def build() -> tuple[torch.Tensor, list[int], dict[str, Any]]:
            indices, shape = self.host.item(("spconv", i))
            return self.tensor(indices), list(shape), {}

        return self._get(("spconv", i), build)

    def varlen_patches(self, i: int, patch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """The same patches packed without padding (``varlen_layout``) on the device."""

        def build() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
            rows, scatter, cu, longest = self.host.item(("varlen", i, patch_size))
            return self.tensor(rows), self.tensor(scatter), self.tensor(cu), longest

        return self._get(("varlen", i, patch_size), build)

    def view(self, key: PlanKey, dtype: torch.dtype) -> Any:
        """The device view of plan item ``key`` (``PlanKey``), made by the method its kind names;
        patch masks in ``dtype``."""
        kind, i = key[0], key[1]
        if kind not in _ITEM_KINDS:
            raise ValueError(f"unknown plan item kind {kind!r}; known: {', '.join(_ITEM_KINDS)}")
        views: dict[str, Callable[[], Any]] = {
            "rulebook": lambda: self.rulebook(i, key[2]), "patches": lambda: self.patches(i, key[2]),
            "patch_mask": lambda: self.patch_mask(i, key[2], dtype), "varlen": lambda: self.varlen_patches(i, key[2]),
            "pool": lambda: self.pool_table(i), "spconv": lambda: self.spconv_state(i)}
        return views[kind]()


_TORCH_DTYPES = {np.int64: torch.int64, np.int32: torch.int32, np.float32: torch.float32, np.bool_: torch.bool,
                 np.int16: torch.int16, np.float64: torch.float64}


def on_device(plan: BatchPlan, device: torch.device | str) -> DevicePlan:
    """The device side of ``plan`` on ``device``: made on first use and kept with the plan, one per
    device (a bare ``cuda`` is the current CUDA device)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device not in plan.device_sides:
        plan.device_sides[device] = DevicePlan(plan, device)
    return plan.device_sides[device]
