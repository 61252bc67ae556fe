"""LiDAR data sets as they are downloaded: one module per data set and the files it reads
(spec sections C, F and G; ``docs/ptv3-and-datasets.md``, ``docs/own-data.md``).

- nuScenes: ``nuscenes`` (the loader), ``nuscenes_index`` (where the keyframes are, the official
  splits of ``nuscenes_splits.json``), ``nuscenes_cameras`` (the six cameras from its tables);
- Waymo: ``waymo`` (the loader of the per-frame layout), ``waymo_source`` (what a ``--data-root``
  holds), ``waymo_v2`` (the v2 parquet components), ``waymo_v2_cameras`` (the five cameras of a
  v2 frame), ``waymo_convert`` (v2 -> per-frame layout, ``python -m train.data.convert``);
- SemanticKITTI: ``semantic_kitti``;
- a folder of one's own scans: ``folder`` on ``scan_files`` (single scan files in common
  formats); ``image_label_files`` writes such a folder labelled by ``python -m train.image_labels``.

Imports ``train.data``'s checks, labels, samples and cameras; the simulator does not import it,
the object data sets (SemanticKITTI's objects) do.
"""
