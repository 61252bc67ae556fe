"""How a condensed set is judged (decisions 72, 73 and 94): the augmentation (``augment``), a
backbone trained from scratch on a set in one process or several (``training``), the named recipes
(``recipes``: cpu, and DD3D's released evaluation as paper), the runs scored on their last step
(``protocol``) and their means, intervals and paired gains (``metrics``).

The bottom room of ``train.condense``: it imports no other room. A new recipe is one entry of
``recipes.RECIPES``.
"""
