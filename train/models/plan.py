"""The batch plan of PTv3: a batch's geometry worked out once, on the host (decision 40).

Everything the network needs to know about where the points are, as opposed to what they carry,
depends only on ``grid_coord`` and ``offset``, which are on the host before a batch moves to the
device. ``BatchPlan`` computes it there with NumPy and a few compiled loops
(``train.models.plan_kernels``, decision 47), level by level (level 0 = the input voxels, level
l + 1 = the stride-2 pooling of level l, spec A6):

- the level's voxels, cloud ids and END offsets, its serialization codes, orders and inverses for
  every curve (spec A2; the curves of level l + 1 are those of level l shifted by 3 bits, and their
  orders follow from level l's without sorting);
- ``cluster`` (level l points -> level l + 1 point) and ``pool_table`` (the members of each level
  l + 1 point, padded, and each member's slot there): the pooling and unpooling maps;
- ``index``: input point -> level point (the decoder taps' index maps);
- per kernel size, the rulebook of the submanifold convolution (spec B): the neighbour pairs that
  exist, grouped by kernel offset (decision 45), found by a sweep over the voxels' pillars; the
  rulebooks of one level share one neighbour search;
- per patch size, the patch layout of serialized attention in every curve (spec A5), its additive
  key mask and its variable-length form; spconv's indices where spconv runs the convolutions.

The items a run's models read (``PTv3.plan_items``) are built at once where the batch is collated,
in a DataLoader worker (``train.engine.input_pipeline.PlannedCollate``, decision 47), and the plan crosses
to the training process as one shared buffer; any other item is built on first use and kept.
``train.models.device_plan.on_device`` hands out device views, uploaded once (this host side
imports without torch, for the labelling through onnxruntime that never imports it, decision 55).
The forward then runs without a single host synchronisation: no sizes are read back from the device. One plan serves every model that sees the batch (the teacher and the student see the same
voxels, decisions 20): pass it as ``data["plan"]``; without one the model builds its own.

Clusters are numbered in the order of the first curve (``orders[0]``) before any shuffle, so a
level's point order does not depend on the random curve permutation (upstream numbers them in the
shuffled first curve; the network is equivariant to that order, decision 40).
"""
from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from train.models.plan_kernels.pooling import cluster_members, pool_clusters
from train.models.plan_kernels.rulebook import fill_rulebooks
from train.models.plan_kernels.rulebook import neighbour_lists as compiled_neighbour_lists
from train.models.plan_kernels.rulebook import pillar_columns
from train.models.serialization import ORDERS, serialize, serialized_depth

if TYPE_CHECKING:  # the device side (train.models.device_plan) and the packing need torch; the host side does not
    import torch


@dataclass(frozen=True)
class HostLevel:
    """One resolution level on the host. ``code``/``order``/``inverse`` are (k, n), one row per curve
    (batch bits included); ``cluster`` maps the finer level's points here (None at level 0);
    ``index`` maps the input points here. A plan handed over by a loader worker keeps only what
    the device side reads (``batch``, ``offset``, ``cluster``, ``index``; level 0 also ``grid``):
    the other fields are None there (``BatchPlan.__getstate__``)."""

    depth: int
    grid: Optional[np.ndarray]
    batch: np.ndarray
    offset: np.ndarray
    code: Optional[np.ndarray]
    order: Optional[np.ndarray]
    inverse: Optional[np.ndarray]
    cluster: Optional[np.ndarray]
    index: np.ndarray

    @property
    def num_points(self) -> int:
        return len(self.batch)


@dataclass(frozen=True)
class PatchLayout:
    """Serialized attention patches of one level (spec A5), for every curve.

    One attention call covers every patch: ``gather`` (k, R, L) lists, per curve, the points of
    each patch row (R rows of L slots); ``mask`` (R, L) marks the real slots, None when every slot
    is real (clouds of more than K points give full rows of K slots; a cloud of n <= K points is one
    row of n real slots, padded to L with masked copies of its first point). ``scatter`` (k, N): per
    curve, the flat slot (row * L + slot) whose output each point keeps (its first occurrence).
    ``lengths`` (R,): real slots per row (the variable-length form of flash attention).
    """

    gather: np.ndarray
    scatter: np.ndarray
    mask: Optional[np.ndarray]
    lengths: np.ndarray


def offsets_to_counts(offset: np.ndarray, num_points: int) -> np.ndarray:
    """Points per cloud from END offsets; raises on a bad offset array (spec A1)."""
    if offset.ndim != 1 or offset.size == 0:
        raise ValueError(f"offset must be a non-empty 1-D tensor of END offsets, got shape {tuple(offset.shape)}")
    counts = np.diff(offset, prepend=0)
    if (counts <= 0).any():
        raise ValueError(
            f"offset {offset.tolist()} is not strictly increasing: every cloud needs at least one "
            "point and offset holds cumulative END indices (e.g. [n0, n0+n1])"
        )
    if int(offset[-1]) != num_points:
        raise ValueError(
            f"offset[-1] = {int(offset[-1])} but the batch has {num_points} points: "
            "offset must hold the cumulative END index of every cloud"
        )
    return counts


@dataclass(frozen=True)
class VoxelPillars:
    """A level's voxels sorted by the packed key (cloud, x, y, z), grouped into pillars (runs of
    equal cloud, x, y; z ascending inside). ``pillar_key`` (P,): (cloud << 2 depth) | (x << depth)
    | y, ascending; pillar P owns the sorted positions ``[pillar_start[P], pillar_start[P + 1])``;
    ``sorted_z``/``sorted_point``: z and point index at each sorted position."""

    depth: int
    pillar_key: np.ndarray
    pillar_start: np.ndarray
    sorted_z: np.ndarray
    sorted_point: np.ndarray


def voxel_pillars(grid: np.ndarray, batch: np.ndarray, depth: int) -> VoxelPillars:
    """The pillars of the voxels ``grid`` (N, 3) of clouds ``batch``, every coordinate below
    ``2**depth`` (the packed key fits an int64 where the level's serialization code does).
    Raises ValueError on duplicate voxels in a cloud."""
    key = (batch << 3 * depth) | (grid[:, 0] << 2 * depth) | (grid[:, 1] << depth) | grid[:, 2]
    order = np.argsort(key)
    sorted_key = key[order]
    if (sorted_key[1:] == sorted_key[:-1]).any():
        raise ValueError(
            "grid_coord holds duplicate voxels inside a cloud: the submanifold convolution needs "
            "one point per voxel (apply grid sampling before the model)"
        )
    pillar = sorted_key >> depth
    first = np.ones(len(key), dtype=bool)
    first[1:] = pillar[1:] != pillar[:-1]
    return VoxelPillars(depth=depth, pillar_key=pillar[first], pillar_start=np.append(np.flatnonzero(first), len(key)),
                        sorted_z=grid[order, 2], sorted_point=order)


@dataclass(frozen=True)
class ConvRulebook:
    """The neighbour pairs of a submanifold convolution, grouped by kernel offset (decision 45).

    Pair j reads input point ``gather[j]`` and adds into output point ``scatter[j]`` through the
    kernel offset ``group_offset[j // rows]``: each offset's pairs fill whole groups of ``rows``
    pairs, the last group of an offset padded with pairs that read the zero row n and write the
    discarded row n. ``gather``/``scatter`` (G * rows,), ``group_offset`` (G,).
    """

    gather: np.ndarray
    scatter: np.ndarray
    group_offset: np.ndarray
    rows: int


@dataclass(frozen=True)
class NeighbourLists:
    """Every voxel's neighbours in a ``kernel_size`` cube, by sorted position of ``VoxelPillars``
    (``train.models.plan_kernels.rulebook.neighbour_lists``)."""

    kernel_size: int
    start: np.ndarray
    offset: np.ndarray
    point: np.ndarray
    count: np.ndarray


def neighbour_lists(pillars: VoxelPillars, kernel_size: int) -> NeighbourLists:
    """The neighbours of every voxel of ``pillars`` in the cube of side ``kernel_size`` (odd)."""
    if kernel_size % 2 != 1 or not 1 <= kernel_size**3 <= np.iinfo(np.int16).max:
        raise ValueError(f"kernel_size must be odd, with k^3 offsets that fit int16, for a submanifold conv, "
                         f"got {kernel_size}")
    columns = pillar_columns(pillars.pillar_key, np.int64(pillars.depth), np.int64(kernel_size))
    start, offset, point, count = compiled_neighbour_lists(
        pillars.pillar_start, pillars.sorted_z, pillars.sorted_point, columns, np.int64(kernel_size))
    return NeighbourLists(kernel_size, start, offset, point, count)


def conv_rulebooks(pillars: VoxelPillars, lists: NeighbourLists, kernel_sizes: tuple[int, ...]) -> list[ConvRulebook]:
    """The rulebook of a submanifold convolution (spec B) of each cube side in ``kernel_sizes``
    (odd, at most the ``lists``' side) on a level's ``pillars``, in one pass over the lists.

    Rulebook pair j of side k reads the point at voxel ``grid[p] + o`` of p's cloud for output
    point p, o = (i0 - r, i1 - r, i2 - r) in (x, y, z) for offset (i0 * k + i1) * k + i2, r = k // 2
    (spconv's KRSC order); offset after offset, each offset's pairs in ascending p. ``rows`` =
    ceil(P / 8K) (at least 16) for P pairs and K = k^3 offsets: padding adds at most
    K * rows <= P / 8 + 16K pairs, and an offset's groups are a few GEMMs of ``rows`` rows each.
    The pair loop is compiled (``train.models.plan_kernels.rulebook``, decision 47)."""
    big = lists.kernel_size
    for k in kernel_sizes:
        if k % 2 != 1 or not 1 <= k <= big:
            raise ValueError(f"kernel_size must be odd and at most the lists' {big}, got {k}")
    n = len(pillars.sorted_point)
    i0, i1, i2 = np.unravel_index(np.arange(big**3), (big, big, big))
    destination = np.full((big**3, len(kernel_sizes)), -1, dtype=np.int64)
    slot_parts, books, size = [], [], 0
    for t, k in enumerate(kernel_sizes):
        shift = big // 2 - k // 2
        j0, j1, j2 = i0 - shift, i1 - shift, i2 - shift
        inside = (np.minimum(np.minimum(j0, j1), j2) >= 0) & (np.maximum(np.maximum(j0, j1), j2) < k)
        own = ((j0 * k + j1) * k + j2)[inside]  # this kernel's offset of each list offset inside it
        count = np.zeros(k**3, dtype=np.int64)
        count[own] = lists.count[inside]
        rows = max(16, -(-int(count.sum()) // (8 * k**3)))
        groups = -(-count // rows)
        first = size + (np.cumsum(groups) - groups) * rows  # each offset's first slot in the buffers
        destination[inside, t] = sum(len(part) for part in slot_parts) + own
        slot_parts.append(first)
        books.append((size, int(groups.sum()) * rows, np.repeat(np.arange(k**3), groups), rows,
                      zip(first + count, first + groups * rows)))
        size += int(groups.sum()) * rows
    slot = np.concatenate(slot_parts)
    gather = np.empty(size, dtype=np.int64)
    scatter = np.empty(size, dtype=np.int64)
    fill_rulebooks(lists.start, lists.offset, lists.point, pillars.sorted_point, destination, slot, gather, scatter)
    result = []
    for begin, length, group_offset, rows, padding in books:
        for end, stop in padding:  # the padding of each offset's last group reads the zero row n, writes row n
            gather[end:stop] = n
            scatter[end:stop] = n
        result.append(ConvRulebook(gather[begin:begin + length], scatter[begin:begin + length], group_offset, rows))
    return result


def patch_layout(offset: np.ndarray, order: np.ndarray, inverse: np.ndarray, patch_size: int) -> PatchLayout:
    """Patches of K = ``patch_size`` serialized positions per cloud (spec A5 padding rule: a cloud
    of n > K points fills ceil(n/K) patches, the last one holding its last K points; n <= K: one
    patch of n points), mapped through every curve's ``order`` (k, N) / ``inverse``."""
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    counts = offsets_to_counts(offset, order.shape[1])
    starts = offset - counts
    long_clouds = counts > patch_size
    width = patch_size if long_clouds.any() else int(counts.max())
    rows_per_cloud = np.where(long_clouds, -(-counts // patch_size), 1)
    row_cloud = np.repeat(np.arange(len(counts)), rows_per_cloud)
    row_in_cloud = np.arange(len(row_cloud)) - np.repeat(np.cumsum(rows_per_cloud) - rows_per_cloud, rows_per_cloud)
    n = counts[row_cloud][:, None]
    j = row_in_cloud[:, None] * width + np.arange(width)[None, :]
    # long clouds: slots past the end step back one patch (the last K points); short: padding
    slots = np.where(j < n, j, np.where(n > width, j - width, 0))
    real = (j < n) | (n > width)
    positions = starts[row_cloud][:, None] + slots
    flat = positions.reshape(-1)
    slot_ids = np.arange(flat.size)
    owner = np.full(order.shape[1], flat.size, dtype=np.int64)
    np.minimum.at(owner, flat[real.reshape(-1)], slot_ids[real.reshape(-1)])
    return PatchLayout(
        gather=order[:, positions], scatter=owner[inverse],
        mask=None if real.all() else real, lengths=real.sum(1),
    )


def pool_level(level: HostLevel) -> HostLevel:
    """The stride-2 pooling of ``level`` (spec A6): clusters = points with equal ``code >> 3``
    (equal cloud and ``grid >> 1``), numbered in the order of the first curve
    (``train.models.plan_kernels.pooling.pool_clusters``). A level of depth 0 holds one voxel per
    cloud (a scan smaller than the network's coarsest voxel, or a single point), which pools into
    itself: the level again, each point its own cluster (decision 54)."""
    if level.depth == 0:
        return HostLevel(depth=0, grid=level.grid, batch=level.batch, offset=level.offset, code=level.code,
                         order=level.order, inverse=level.inverse, cluster=np.arange(level.num_points),
                         index=level.index)
    cluster, head, order, inverse = pool_clusters(level.code[0], level.order)
    batch = level.batch[head]
    return HostLevel(
        depth=level.depth - 1, grid=level.grid[head] >> 1, batch=batch,
        offset=np.cumsum(np.bincount(batch, minlength=len(level.offset))), code=level.code[:, head] >> 3,
        order=order, inverse=inverse, cluster=cluster, index=cluster[level.index],
    )


@dataclass(frozen=True)
class PoolTable:
    """The members of each cluster of a pooled level: ``members`` (M, S) in ascending order,
    padded with ``len(slot)`` (a -inf row), S = the largest cluster; ``slot`` (n,) where each
    member sits in ``members`` flattened (the pooling's backward reads it, ``train.models.blocks``)."""

    members: np.ndarray
    slot: np.ndarray


def pool_table(cluster: np.ndarray, num_clusters: int) -> PoolTable:
    """The ``PoolTable`` of ``cluster`` (``train.models.plan_kernels.pooling.cluster_members``)."""
    return PoolTable(*cluster_members(cluster, np.int64(num_clusters)))


_LOG = logging.getLogger(__name__)

PlanKey = tuple[Any, ...]
"""A plan item: ("rulebook", level, kernel_size), ("patches", level, patch_size), ("patch_mask",
level, patch_size), ("varlen", level, patch_size), ("pool", level) or ("spconv", level)."""


class BatchPlan:
    """The geometry of one batch on the host (see the module docstring).

    ``grid_coord`` (N, 3) int64 and ``offset`` (B,) int64 END offsets, as tensors or arrays; device
    tensors are copied to the host once (the only host synchronisation, for a model called without
    a plan on a device). ``orders``: the serialization curves (spec A2). ``items``: the plan items
    to build now (``PTv3.plan_items``: what the models of a run will ask for, decision 47); any
    other is built on first use.
    """

    def __init__(self, grid_coord: Any, offset: Any, orders: tuple[str, ...] = ORDERS, items: Iterable[PlanKey] = ()):
        grid = _host_array(grid_coord, "grid_coord")
        offset = _host_array(offset, "offset")
        if grid.ndim != 2 or grid.shape[1] != 3:
            raise ValueError(f"grid_coord must be (N, 3), got {tuple(grid.shape)}")
        counts = offsets_to_counts(offset, len(grid))
        batch = np.repeat(np.arange(len(counts)), counts)
        depth = serialized_depth(grid, len(counts))
        code, order, inverse = serialize(grid, batch, depth, tuple(orders))
        self.orders = tuple(orders)
        self.num_points = len(grid)
        self.num_clouds = len(counts)
        self.levels = [HostLevel(depth, grid, batch, offset, code, order, inverse, None, np.arange(len(grid)))]
        self._items: dict[PlanKey, Any] = {}
        self._searches: dict[int, tuple[VoxelPillars, NeighbourLists]] = {}  # per level, see _build_rulebooks
        self.device_sides: dict[torch.device, Any] = {}  # train.models.device_plan.on_device's, one per device
        self.buffer: Optional[torch.Tensor] = None  # the packed arrays, once packed (pin_memory, a worker's plan)
        self.build(items)

    def level(self, i: int) -> HostLevel:
        """Level ``i`` (pooling the levels before it on first use)."""
        while len(self.levels) <= i:
            self.levels.append(pool_level(self.levels[-1]))
        return self.levels[i]

    def build(self, keys: Iterable[PlanKey]) -> None:
        """Build the items ``keys`` now; the rulebooks of one level share one neighbour search."""
        keys = list(keys)
        sides: dict[int, set[int]] = {}
        for key in keys:
            if key[0] == "rulebook" and key not in self._items:
                sides.setdefault(key[1], set()).add(key[2])
        for i, kernel_sizes in sorted(sides.items()):
            self._build_rulebooks(i, tuple(sorted(kernel_sizes)))
        for key in keys:
            self.item(key)
        self._searches.clear()  # every rulebook asked for is built

    def _build_rulebooks(self, i: int, kernel_sizes: tuple[int, ...]) -> None:
        """The rulebooks of level ``i`` for ``kernel_sizes`` from one neighbour search, kept for the
        level's later rulebooks of no larger a kernel (a forward asks for the 5^3 stem first, then
        the blocks' 3^3 convolutions); the search is host-only and never handed over."""
        found = self._searches.get(i)
        if found is None or found[1].kernel_size < max(kernel_sizes):
            level = self.level(i)
            pillars = voxel_pillars(level.grid, level.batch, level.depth)
            found = self._searches[i] = (pillars, neighbour_lists(pillars, max(kernel_sizes)))
        for kernel_size, book in zip(kernel_sizes, conv_rulebooks(*found, kernel_sizes)):
            self._items[("rulebook", i, kernel_size)] = book

    def item(self, key: PlanKey) -> Any:
        """A derived host item (``PlanKey``), built on first use."""
        if key not in self._items:
            kind, i, arg = (tuple(key) + (None,))[:3]
            if kind not in _ITEM_KINDS or len(key) != 2 + (kind in _SIZED):
                raise KeyError(f"unknown plan item {key!r}: kinds {_ITEM_KINDS}, with a size for {_SIZED}")
            if self.levels[0].code is None:  # handed over without the host-only fields
                _LOG.warning("plan item %s was not built where the batch was prepared: building it here "
                             "(add it to the model's plan_items)", key)
                first = self.levels[0]
                self._items[key] = BatchPlan(first.grid, first.offset, self.orders, [key]).item(key)
                return self._items[key]
            level = self.level(i)
            if kind == "rulebook":
                self._build_rulebooks(i, (arg,))
                return self._items[key]
            if kind == "patches":
                value: Any = patch_layout(level.offset, level.order, level.inverse, arg)
            elif kind == "patch_mask":
                value = additive_mask(self.item(("patches", i, arg)))
            elif kind == "varlen":
                value = varlen_layout(self.item(("patches", i, arg)))
            elif kind == "pool":
                value = pool_table(level.cluster, level.num_points)
            else:  # spconv's indices (cloud, x, y, z) int32 and spatial shape
                value = (np.concatenate([level.batch[:, None], level.grid], 1).astype(np.int32),
                         (level.grid.max(0) + 1).tolist())
            self._items[key] = value
        return self._items[key]

    def _packed(self, shared: bool = False, pinned: bool = False) -> dict[str, Any]:
        """The plan's state with every array the device side reads packed into one byte tensor
        (``train.models.packing``); the host-only fields (codes, orders, inverses, the coarser
        levels' grids) stay behind."""
        from train.models.packing import pack

        levels = [dataclasses.replace(level, grid=level.grid if i == 0 else None, code=None, order=None, inverse=None)
                  for i, level in enumerate(self.levels)]
        skeleton, buffer = pack((levels, self._items), shared=shared, pinned=pinned)
        return {"orders": self.orders, "num_points": self.num_points, "num_clouds": self.num_clouds,
                "skeleton": skeleton, "buffer": buffer}

    def __getstate__(self) -> dict[str, Any]:
        """A DataLoader worker hands the plan to the training process as one block of shared
        memory, not array by array (:meth:`_packed`)."""
        return self._packed(shared=_in_worker())

    def __setstate__(self, state: dict[str, Any]) -> None:
        from train.models.packing import unpack

        self.orders, self.num_points, self.num_clouds = state["orders"], state["num_points"], state["num_clouds"]
        self.levels, self._items = unpack(state["skeleton"], state["buffer"])
        check_levels(self.levels, self.num_clouds, self.num_points)
        self._searches = {}
        self.device_sides = {}
        self.buffer = state["buffer"]

    def pin_memory(self) -> "BatchPlan":
        """The plan with every array in one page-locked buffer (DataLoader's ``pin_memory`` calls
        this): a device copies it in one asynchronous transfer (``DevicePlan.upload``)."""
        plan = BatchPlan.__new__(BatchPlan)
        plan.__setstate__(self._packed(pinned=True))
        return plan


_ITEM_KINDS = ("rulebook", "patches", "patch_mask", "varlen", "pool", "spconv")
_SIZED = ("rulebook", "patches", "patch_mask", "varlen")


def additive_mask(layout: PatchLayout) -> Optional[np.ndarray]:
    """The additive key mask (R, 1, 1, L) float32 of a patch layout (0 real, -inf padding), or
    None when every slot is real (SDPA converts a boolean mask on every call)."""
    if layout.mask is None:
        return None
    return np.where(layout.mask, np.float32(0), np.float32(-np.inf))[:, None, None, :]


def varlen_layout(layout: PatchLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The patches packed without padding (flash attention's variable-length form): rows (k, T)
    per curve, scatter (k, N) into the packed rows, cu_seqlens (R + 1,) int32, the longest row."""
    real = np.ones(layout.gather.shape[1:], dtype=bool) if layout.mask is None else layout.mask
    packed_pos = np.cumsum(real.reshape(-1)) - 1
    cu = np.concatenate([[0], np.cumsum(layout.lengths)]).astype(np.int32)
    return layout.gather[:, real], packed_pos[layout.scatter], cu, int(layout.lengths.max())


def check_levels(levels: list[HostLevel], num_clouds: int, num_points: int) -> None:
    """Raise ValueError unless every level holds every cloud: ``offset`` (num_clouds,) strictly
    increasing END offsets ending at the level's point count, ``batch`` and ``index`` of the
    right lengths. Run where a plan is unpacked (handed over by a loader worker), so that a plan
    that arrives broken stops the step with this message instead of feeding wrong offsets to the
    models; about 10 us per level. (Not run where the worker packs it: an error raised while the
    worker's queue pickles is swallowed there, and the loader waits for the batch for ever.)"""
    for i, level in enumerate(levels):
        counts = np.diff(level.offset, prepend=0)
        if (level.offset.shape != (num_clouds,) or (counts <= 0).any() or int(level.offset[-1]) != len(level.batch)
                or len(level.index) != num_points):
            raise ValueError(
                f"batch plan broken in its hand-over: level {i} has END offsets {level.offset.tolist()} for "
                f"{num_clouds} cloud(s), {len(level.batch)} points and an index of {len(level.index)} (expected "
                f"{num_points}); every level must hold every cloud of the batch"
            )


def _in_worker() -> bool:
    import torch.utils.data  # a plan is pickled by a DataLoader only where torch runs

    return torch.utils.data.get_worker_info() is not None


def _host_array(value: Any, name: str) -> np.ndarray:
    """``value`` as the plan's own int64 array: a copy, never a view of the caller's memory. A
    DataLoader worker pickles the batch's tensors before its plan, and pickling a tensor moves its
    storage into shared memory and frees the old one, so a view taken before (``Tensor.numpy()``)
    would pack freed memory into the plan; level 0's offsets and grid arrived as heap garbage."""
    torch = sys.modules.get("torch")  # a tensor can only come from where torch is imported
    is_tensor = torch is not None and isinstance(value, torch.Tensor)
    array = np.array(value.cpu().numpy() if is_tensor else value, copy=True)
    if array.dtype != np.int64:
        raise ValueError(f"{name} must be int64, got {array.dtype}: use {name}.long()")
    return array
