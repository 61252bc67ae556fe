"""What the distillation methods stand on: the matching loops of gradient and distribution matching
(``matching_loops``, Eq. 10, decisions 75, 84 and 95), the persistence term added to a class's
matching distance (``topology_term``, decisions 96-98), DD3D's point-wise generator
(``generator``, Eq. 7-9, decision 76), the released code's settings by data set (``released``,
decision 92) and the feature network of Herding and K-Center (``features``, decision 71).

Imports the files and evaluation rooms of ``train.condense``, never a method.
"""
