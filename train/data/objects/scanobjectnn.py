"""ScanObjectNN (Uy et al., ICCV 2019), 15 classes of real scanned objects, read from its
``h5_files`` download (:mod:`.h5_files`, 2,048 points a cloud).

Three variants, one data set name each (:data:`SCANOBJECTNN_VARIANTS`): OBJ_BG, the objects with
their background (``main_split/{training,test}_objectdataset.h5``, the paper's ScanObjectNN),
OBJ_ONLY, the objects alone (``main_split_nobg/{training,test}_objectdataset.h5``), and
PB_T50_RS, the hardest perturbed variant (translated, rotated, scaled boxes:
``main_split/{training,test}_objectdataset_augmentedrot_scale75.h5``). The class id is the index
into :data:`SCANOBJECTNN_CLASSES`, the order of the data set's own class list.
"""
from __future__ import annotations

from pathlib import Path

from ..validation import inside_hint, layout_error, require_dir
from .cloud import SPLIT_CODES, RawClouds, standard_split
from .h5_files import read_h5_clouds

SCANOBJECTNN_CLASSES = ("bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table",
                        "bed", "pillow", "sink", "sofa", "toilet")
# data set name -> (folder, file suffix) of the variant
SCANOBJECTNN_VARIANTS = {
    "scanobjectnn": ("main_split", ""),
    "scanobjectnn_obj_only": ("main_split_nobg", ""),
    "scanobjectnn_pb_t50_rs": ("main_split", "_augmentedrot_scale75"),
}
SCANOBJECTNN_LAYOUT = """  <root>/   (h5_files/ as extracted)
    main_split/training_objectdataset.h5, test_objectdataset.h5              OBJ_BG
    main_split_nobg/training_objectdataset.h5, test_objectdataset.h5         OBJ_ONLY
    main_split/training_objectdataset_augmentedrot_scale75.h5, test_...h5    PB_T50_RS"""


def read_scanobjectnn(root: Path, split: str, variant: str) -> RawClouds:
    """``split`` (:data:`.cloud.SPLITS`) of ``variant`` (a key of :data:`SCANOBJECTNN_VARIANTS`)."""
    root = require_dir(root, variant, SCANOBJECTNN_LAYOUT)
    folder, suffix = SCANOBJECTNN_VARIANTS[variant]

    def read(standard: str) -> RawClouds:
        path = root / folder / f"{'training' if standard == 'trainval' else 'test'}_objectdataset{suffix}.h5"
        if not path.is_file():
            hint = "" if (root / folder).is_dir() else inside_hint(root, (folder,))
            raise layout_error(f"{variant} file {str(path)!r} is missing{hint}", SCANOBJECTNN_LAYOUT)
        return read_h5_clouds(path, SPLIT_CODES[standard])

    return standard_split(split, read)
