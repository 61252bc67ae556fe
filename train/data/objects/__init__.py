"""Object point clouds for shape classification and part segmentation (the data of dataset
distillation, DD3D; ``docs/objects.md``, decision 66), read from the downloads as they are.

One door::

    load_objects(name, root=None, split="train", *, points=None, setting="aligned",
                 task="classification", seed=0, size=None) -> ObjectSet

``ObjectSet``: ``points`` (S, N, 3) float32 (centred, the farthest point on the unit sphere),
``labels`` (S,) int64, ``class_names``; with ``task="parts"`` also ``parts`` (S, N) int64,
``part_names`` and ``part_classes`` (the class of each part id). N is 1,024 by default, 2,048 for
parts. ``setting="rotated"``: every cloud rotated at random in SO(3), then projected onto its
principal axes (variances decreasing); ``"rotated_raw"``: rotated, not projected. ``split``: ``train``, ``val`` (held out of the standard
training split: every tenth cloud of each class, or the official list), ``trainval`` (the
standard training split), ``test``. ``seed`` keys every random draw; the same arguments give the
same arrays.

Names (``OBJECT_SETS``; modules): ``modelnet40`` (either download layout, :mod:`.modelnet40`),
``scanobjectnn`` (OBJ_BG), ``scanobjectnn_obj_only``, ``scanobjectnn_pb_t50_rs``
(:mod:`.scanobjectnn`), ``shapenet_part`` (:mod:`.shapenet_part`), ``semantic_kitti_objects``
(:mod:`.lidar_objects`), all read from ``root``; and two generated ones that need no download,
``shapes`` (13 procedural classes with parts, :mod:`.shapes` on :mod:`.surfaces`) and
``lidar_objects`` (the objects of the synthetic LiDAR scenes, :mod:`.lidar_objects`), whose
``size`` sets how much is made. Shared: :mod:`.cloud` (the set, the splits, the pre-processing),
:mod:`.h5_files`, :mod:`.text_files`. Imports ``train.data``'s checks, labels, SemanticKITTI reader
and synthetic simulator; nothing imports this package but the commands built on it.
"""
from .cloud import DEFAULT_POINTS, SETTINGS, SPLITS, TASKS, ObjectSet
from .load import OBJECT_SETS, PART_SETS, load_objects

__all__ = ["DEFAULT_POINTS", "OBJECT_SETS", "PART_SETS", "SETTINGS", "SPLITS", "TASKS", "ObjectSet", "load_objects"]
