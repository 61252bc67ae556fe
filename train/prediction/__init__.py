"""Segmenting scans with a trained model (``python -m train.predict``, decision 50).

``model``: the checkpoint read as a model with what it expects (classes, input features, voxel
size); ``inputs``: the scans of a split or of files, read and voxelised in loader workers;
``layouts``: where and how each scan's labels are written (``.npy``, ``.ply``, SemanticKITTI's
``.label`` files, the nuScenes lidarseg submission); ``run``: the batched loop between them; ``export``: the model as an ONNX file, ``onnx_file`` and
``onnx_run``: that file read back and run by onnxruntime, without torch (decision 55).
It sits above the runner (decision 49): it may import every room below it (runtime, option
table, ``models``, ``data``, engine, evaluation, the runner's data splits), and never the study or
a command; nothing below it imports it.
"""
