"""The batch plan of PTv3: a batch's geometry worked out once, on the host (decision 40).

Everything the network needs to know about where the points are, as opposed to what they carry,
depends only on ``grid_coord`` and ``offset``, which are on the host before a batch moves to the
device. ``BatchPlan`` computes it there with NumPy, level by level (level 0 = the input voxels,
level l + 1 = the stride-2 pooling of level l, spec A6):

- the level's voxels, cloud ids and END offsets, its serialization codes, orders and inverses for
  every curve (spec A2; the curves of level l + 1 are those of level l shifted by 3 bits, and their
  orders follow from level l's without sorting);
- ``cluster`` (level l points -> level l + 1 point) and ``pool_table`` (the members of each level
  l + 1 point, padded): the pooling and unpooling maps;
- ``index``: input point -> level point (the decoder taps' index maps);
- per kernel size, the rulebook of the submanifold convolution (spec B): its neighbour table
  compacted to the neighbour pairs that exist, grouped by kernel offset;
- per patch size, the patch layout of serialized attention in every curve (spec A5).

Each piece is built on first use and kept; ``on(device)`` hands out device copies, each uploaded
once. The forward then runs without a single host synchronisation: no sizes are read back from the
device. One plan serves every model that sees the batch (the teacher and the student see the same
voxels, decisions 20): pass it as ``data["plan"]``; without one the model builds its own.

Clusters are numbered in the order of the first curve (``orders[0]``) before any shuffle, so a
level's point order does not depend on the random curve permutation (upstream numbers them in the
shuffled first curve; the network is equivariant to that order, decision 40).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch

from train.models.serialization import ORDERS, inverse_permutation, serialize, serialized_depth


@dataclass(frozen=True)
class HostLevel:
    """One resolution level on the host. ``code``/``order``/``inverse`` are (k, n), one row per curve
    (batch bits included); ``cluster`` maps the finer level's points here (None at level 0);
    ``index`` maps the input points here."""

    depth: int
    grid: np.ndarray
    batch: np.ndarray
    offset: np.ndarray
    code: np.ndarray
    order: np.ndarray
    inverse: np.ndarray
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


def neighbour_table(grid: np.ndarray, batch: np.ndarray, kernel_size: int) -> np.ndarray:
    """Submanifold-conv neighbours (spec B): ``table[p, o]`` is the point at voxel ``grid[p] + o``
    in p's cloud, or n (a zero row) when there is none; o = (i0 * k + i1) * k + i2 is the offset
    (i0 - r, i1 - r, i2 - r) in (x, y, z), r = k // 2 (spconv's KRSC order).

    Voxel keys (cloud, x, y, z) in mixed radix, sorted once. One binary search per (dx, dy) column
    of the kernel: z is the last digit, so with unique sorted keys the insertion point of key + 1 is
    that of key plus one if key was found. Only offsets before the centre are searched: p + o = q
    gives q - o = p, the mirrored entry. Raises ValueError on duplicate voxels or an even kernel.
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd for a submanifold conv, got {kernel_size}")
    r = kernel_size // 2
    n = len(batch)
    k3 = kernel_size**3
    centre = k3 // 2
    side = int(grid.max()) + 1 + 2 * r
    num_clouds = int(batch.max()) + 1
    if num_clouds * side**3 >= 2**62:
        raise ValueError(f"voxel key overflow: {num_clouds} clouds x side {side}^3 does not fit int64")
    shifted = grid + r
    keys = ((batch * side + shifted[:, 0]) * side + shifted[:, 1]) * side + shifted[:, 2]
    perm = np.argsort(keys)
    sorted_keys = keys[perm]
    if n > 1 and (sorted_keys[1:] == sorted_keys[:-1]).any():
        raise ValueError(
            "grid_coord holds duplicate voxels inside a cloud: the submanifold convolution needs "
            "one point per voxel (apply grid sampling before the model)"
        )
    table = np.full((n, k3), n, dtype=np.int64)
    table[:, centre] = np.arange(n)
    for col in range(kernel_size * kernel_size // 2 + 1):
        i0, i1 = divmod(col, kernel_size)
        query = sorted_keys + (((i0 - r) * side + (i1 - r)) * side - r)
        pos = np.searchsorted(sorted_keys, query)
        for i2 in range(kernel_size):
            o = col * kernel_size + i2
            if o >= centre:
                break
            found = sorted_keys[np.minimum(pos, n - 1)] == query
            dst, src = perm[found], perm[pos[found]]
            table[dst, o] = src
            table[src, k3 - 1 - o] = dst
            pos = pos + found
            query = query + 1
    return table


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


def conv_rulebook(table: np.ndarray) -> ConvRulebook:
    """The pairs of a neighbour table (N, K) (``neighbour_table``), offset by offset.

    ``rows`` = ceil(P / 8K) (at least 16) for P pairs: padding adds at most K * rows <= P / 8 + 16K
    pairs, and an offset's groups are a few GEMMs of ``rows`` rows each.
    """
    n, k = table.shape
    offset, point = np.nonzero(table.T != n)  # offset-major, points ascending within an offset
    counts = np.bincount(offset, minlength=k)
    rows = max(16, -(-len(point) // (8 * k)))
    groups = -(-counts // rows)
    starts = np.repeat((np.cumsum(groups) - groups) * rows - (np.cumsum(counts) - counts), counts)
    slot = starts + np.arange(len(point))
    gather = np.full(int(groups.sum()) * rows, n, dtype=np.int64)
    scatter = gather.copy()
    gather[slot] = table[point, offset]
    scatter[slot] = point
    return ConvRulebook(gather, scatter, np.repeat(np.arange(k), groups), rows)


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
    (equal cloud and ``grid >> 1``), numbered in the order of the first curve."""
    if level.depth < 1:
        raise ValueError("cannot pool a level of depth 0: the grid is already a single voxel per cloud")
    order0 = level.order[0]
    key = level.code[0, order0] >> 3
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    cluster = np.empty(len(key), dtype=np.int64)
    cluster[order0] = np.cumsum(first) - 1
    head = order0[first]
    code = level.code[:, head] >> 3
    # Every curve keeps each cluster contiguous (prefix property): the coarse order of a curve is its
    # fine order's clusters, each taken once.
    fine_clusters = cluster[level.order]
    starts = np.ones(level.order.shape, dtype=bool)
    starts[:, 1:] = fine_clusters[:, 1:] != fine_clusters[:, :-1]
    order = fine_clusters[starts].reshape(len(code), len(head))
    batch = level.batch[head]
    return HostLevel(
        depth=level.depth - 1, grid=level.grid[head] >> 1, batch=batch,
        offset=np.cumsum(np.bincount(batch, minlength=len(level.offset))), code=code, order=order,
        inverse=inverse_permutation(order), cluster=cluster, index=cluster[level.index],
    )


def pool_table(cluster: np.ndarray, num_clusters: int) -> np.ndarray:
    """(M, S) members of each cluster, padded with ``len(cluster)`` (a -inf row), S = largest."""
    members = np.argsort(cluster, kind="stable")
    sizes = np.bincount(cluster, minlength=num_clusters)
    rank = np.arange(len(cluster)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    table = np.full((num_clusters, int(sizes.max())), len(cluster), dtype=np.int64)
    table[cluster[members], rank] = members
    return table


class BatchPlan:
    """The geometry of one batch on the host (see the module docstring).

    ``grid_coord`` (N, 3) int64 and ``offset`` (B,) int64 END offsets, as tensors or arrays; device
    tensors are copied to the host once (the only host synchronisation, for a model called without
    a plan on a device). ``orders``: the serialization curves (spec A2).
    """

    def __init__(self, grid_coord: Any, offset: Any, orders: tuple[str, ...] = ORDERS):
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
        self._items: dict[tuple[Any, ...], Any] = {}
        self._devices: dict[torch.device, DevicePlan] = {}

    def level(self, i: int) -> HostLevel:
        """Level ``i`` (pooling the levels before it on first use)."""
        while len(self.levels) <= i:
            self.levels.append(pool_level(self.levels[-1]))
        return self.levels[i]

    def item(self, key: tuple[Any, ...]) -> Any:
        """A derived host array: ("neighbours", level, kernel_size), ("rulebook", level,
        kernel_size), ("patches", level, patch_size) or ("pool", level); built on first use."""
        if key not in self._items:
            kind, i, arg = (key + (None,))[:3]
            level = self.level(i)
            if kind == "neighbours":
                value: Any = neighbour_table(level.grid, level.batch, arg)
            elif kind == "rulebook":
                value = conv_rulebook(self.item(("neighbours", i, arg)))
            elif kind == "patches":
                value = patch_layout(level.offset, level.order, level.inverse, arg)
            elif kind == "pool":
                value = pool_table(level.cluster, level.num_points)
            else:
                raise KeyError(f"unknown plan item {key!r}")
            self._items[key] = value
        return self._items[key]

    def on(self, device: torch.device) -> "DevicePlan":
        """The plan's device side on ``device`` (one per device, kept)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in self._devices:
            self._devices[device] = DevicePlan(self, device)
        return self._devices[device]


@dataclass(frozen=True)
class DeviceRulebook:
    """A ``ConvRulebook`` as device tensors, with the kernel's number of offsets."""

    gather: torch.Tensor
    scatter: torch.Tensor
    group_offset: torch.Tensor
    rows: int
    offsets: int


class DevicePlan:
    """Device copies of a ``BatchPlan``'s arrays, each uploaded on first use (no device-to-host
    traffic). On the CPU the tensors share the host arrays' memory."""

    def __init__(self, host: BatchPlan, device: torch.device):
        self.host = host
        self.device = device
        self._tensors: dict[tuple[Any, ...], Any] = {}

    def _get(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        if key not in self._tensors:
            self._tensors[key] = build()
        return self._tensors[key]

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, non_blocking=True)

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

    def pool_table(self, i: int) -> torch.Tensor:
        """(N_i, S) members (level i - 1 points) of each level-i point, padded with N_{i-1}."""
        return self._get(("pool", i), lambda: self.tensor(self.host.item(("pool", i))))

    def patches(self, i: int, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Level i's patch layout for every curve: gather (k, R, L) and scatter (k, N_i)."""

        def build() -> tuple[torch.Tensor, torch.Tensor]:
            layout: PatchLayout = self.host.item(("patches", i, patch_size))
            return self.tensor(layout.gather), self.tensor(layout.scatter)

        return self._get(("patches", i, patch_size), build)

    def patch_mask(self, i: int, patch_size: int, dtype: torch.dtype) -> Optional[torch.Tensor]:
        """Additive key mask (R, 1, 1, L) of level i's patches in ``dtype`` (0 real, -inf padding),
        or None when every slot is real; one per dtype (SDPA converts a boolean mask every call)."""

        def build() -> Optional[torch.Tensor]:
            layout: PatchLayout = self.host.item(("patches", i, patch_size))
            if layout.mask is None:
                return None
            additive = np.where(layout.mask, 0.0, -np.inf).astype(np.float32)[:, None, None, :]
            return self.tensor(additive).to(dtype)

        return self._get(("patch_mask", i, patch_size, dtype), build)

    def spconv_state(self, i: int) -> tuple[torch.Tensor, list[int], dict[str, Any]]:
        """spconv's view of level i: indices (N_i, 4) int32 (cloud, x, y, z), the spatial shape and
        the rulebook dictionary every spconv layer on this level fills and reuses."""

        def build() -> tuple[torch.Tensor, list[int], dict[str, Any]]:
            level = self.host.level(i)
            indices = np.concatenate([level.batch[:, None], level.grid], 1).astype(np.int32)
            return self.tensor(indices), (level.grid.max(0) + 1).tolist(), {}

        return self._get(("spconv", i), build)

    def varlen_patches(self, i: int, patch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """The same patches packed without padding (flash attention's variable-length form):
        rows (k, T) per curve, scatter (k, N_i) into the packed rows, cu_seqlens (R + 1,) int32 and
        the longest row."""

        def build() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
            layout: PatchLayout = self.host.item(("patches", i, patch_size))
            real = np.ones(layout.gather.shape[1:], dtype=bool) if layout.mask is None else layout.mask
            packed_pos = np.cumsum(real.reshape(-1)) - 1
            cu = np.concatenate([[0], np.cumsum(layout.lengths)]).astype(np.int32)
            return (self.tensor(layout.gather[:, real]), self.tensor(packed_pos[layout.scatter]),
                    self.tensor(cu), int(layout.lengths.max()))

        return self._get(("varlen", i, patch_size), build)


def _host_array(value: Any, name: str) -> np.ndarray:
    array = value.cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.dtype != np.int64:
        raise ValueError(f"{name} must be int64, got {array.dtype}: use {name}.long()")
    return array
