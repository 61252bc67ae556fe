"""The stages of one ``python -m train.run``: the data splits of a run (``datasets``), the check of
every input before work starts (``preflight``), and each stage trained or reused, evaluated and
reported (``stages``). It may import every room below it (runtime, option table, ``models``,
``data``, engine, evaluation), and never the study or a command (decision 49); the commands
``train.run`` and ``train.study`` both run on it.
"""
