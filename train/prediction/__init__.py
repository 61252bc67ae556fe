"""Segmenting scans with a trained model (``python -m train.predict``, decision 50).

``model``: the checkpoint read as a model with what it expects (classes, input features, voxel
size); ``inputs``: the scans of a split or of files, read and voxelised in loader workers;
``layouts``: where and how each scan's labels are written (``.npy``, ``.ply``, SemanticKITTI's
``.label`` files, the nuScenes lidarseg submission); ``run``: the batched loop between them.
The package imports the data loaders, the models, the evaluation pipeline and the input pipeline;
no training module imports it.
"""
