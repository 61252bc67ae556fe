"""Where the time of one topological-loss step goes: paper Algorithm 1 by stage, in core-seconds.

One forward + backward of ``fast.topo_loss`` runs in the calling process (a pool of 0 workers, so
every stage is on one core and visible to the profiler) under ``cProfile``; the compiled kernels
are called from Python, so each appears as one entry, and their own time is summed per stage of
Algorithm 1 with :data:`STAGES`. Whatever no stage names (torch glue, checks, bookkeeping) is
``other``. The sum is the step's serial cost; the worker pool spreads the per-cloud stages (TPS to
the H1 reduction) over the cores, the rest stays in the calling process.
"""
from __future__ import annotations

import cProfile
import pstats
import re
from collections.abc import Callable

# (stage label, the functions whose own time it sums), in pipeline order
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("normalisation (calling process)", ("normalize", "_safe_sqrt", "cloud_ids")),
    ("TPS (Algorithm 5)", ("farthest_point_indices", "tps_indices")),
    ("distance matrices", ("_distance_rows", "_mirror_tiles")),
    ("radius, prefix certificate (decision 36)", ("_radius_tiles", "truncation_limits", "mst_longest_edge",
                                                  "_cover_rows", "_count_within", "_list_within")),
    ("edge sort", ("length_order", "_radix_order")),
    ("edge ranks, neighbour lists", ("build_edge_order",)),
    ("apparent pairs, spanning tree", ("_lune_edges", "columns_to_reduce")),
    ("H1 reduction", ("reduce_columns",)),
    ("H0 pairs, diagram assembly", ("tree_h0_part", "reduce_stage", "_sorted_by_death_birth")),
    ("critical-edge lengths (Eq. 1)", ("forward",)),
    ("PWCD (Eq. 2-3)", ("_row_minima", "_nearest_ties", "pwcd", "_tied_minimum", "_dist_diag")),
    ("backward", ("run_backward", "backward")),
)
OTHER = "other"


def profile_stages(step: Callable[[], object]) -> dict[str, float]:
    """Seconds of ``step()``'s own time per stage of :data:`STAGES`, plus ``other`` (the rest)."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        step()
    finally:
        profiler.disable()
    owner = {name: label for label, names in STAGES for name in names}
    seconds = {label: 0.0 for label, _ in STAGES}
    seconds[OTHER] = 0.0
    for (_, _, function), (_, _, own, _, _) in pstats.Stats(profiler).stats.items():
        seconds[owner.get(_bare_name(function), OTHER)] += own
    return seconds


def _bare_name(function: str) -> str:
    """``"<method 'run_backward' of ...>"`` or ``"<built-in method numpy.zeros>"`` or a plain name -> the last dotted part."""
    quoted = re.search(r"'([^']+)'", function)
    text = quoted.group(1) if quoted else function.strip("<>").split()[-1]
    return text.rsplit(".", 1)[-1]
