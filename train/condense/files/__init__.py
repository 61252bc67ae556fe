"""What a condensed set is, on disk and in space: the one writer and reader of ``condensed.npz``
(``condensed_file``, decision 70), the frame a set lives in (``rotator``: none, pca, fixed and
DD3D's learned sign, decision 86), which data a set was made from and is evaluated on (``data``),
and a distillation's checkpoint (``distill_checkpoint``, decision 80).

Imports only the evaluation room (a data spec's recipe key) of ``train.condense``.
"""
