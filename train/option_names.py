"""The names some options of ``python -m train.run`` choose among, defined once, here, without
importing torch or numpy, so that ``--help`` prints at once (decision 38).

:mod:`train.engine.losses` and :mod:`train.data.lidar.nuscenes`, which act on these choices, import them from
here; the comments say what each choice means.
"""
from __future__ import annotations

# Class weighting of the cross-entropy (decision 22). "none" is the paper's and the PTv3 recipe's plain CE;
# "inverse-sqrt" weights class c by f_c^(-1/2) (f_c its share of the labelled training points),
# scaled so that sum_c f_c w_c = 1: a point of a class 100x rarer weighs 10x more, while the loss
# of an average point keeps its scale. A common remedy for the long tail of LiDAR classes, which
# mIoU weighs like the common ones.
CLASS_WEIGHTINGS: tuple[str, ...] = ("none", "inverse-sqrt")

# L_seg choices. Paper Eq. 8 writes cross-entropy; the PTv3 recipe the paper's models are trained
# with (spec D) adds Lovasz-softmax, which optimises the IoU of each class present in a batch and so
# helps the rare classes that mIoU weighs like the common ones. The recipe is the default; the
# saliency maps of Eq. 4 are gradients of whichever L_seg is chosen.
SEG_LOSSES: tuple[str, ...] = ("ce", "ce+lovasz")
DEFAULT_SEG_LOSS = "ce+lovasz"

# nuScenes releases a run can read (spec C2); v1.0-test is unlabelled.
NUSCENES_VERSIONS: tuple[str, ...] = ("v1.0-trainval", "v1.0-mini", "v1.0-test")
DEFAULT_NUSCENES_VERSION = "v1.0-trainval"

# Output layouts of python -m train.predict (train.prediction.layouts says what each holds).
PREDICTION_FORMATS: tuple[str, ...] = ("npy", "ply", "semantic_kitti", "nuscenes")
