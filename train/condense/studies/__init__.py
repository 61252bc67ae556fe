"""The studies of the DD3D paper's tables: the study's plan, units and report (``study``: Tables
1-6, and 7-9 for the persistence term, decisions 87 and 96-97), the coreset table of the embedded
data set (``table``, decision 73), pictures of real and condensed clouds and of their diagrams
(``pictures``, Figure 6) and the diagram and Chamfer gaps of a set (``shape_gap``).

Imports every room of ``train.condense`` but the command. A new study table is one branch of
``study.units`` and one of ``study.report``.
"""
