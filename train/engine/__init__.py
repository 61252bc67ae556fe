"""One stage's training: the loop with its checkpoints and resume (``loop``), the steps and their
losses (``steps``, ``losses``), the guarded optimiser update (``update``), the optimiser and its
schedule (``optim``), the input pipeline that plans batches where they are collated
(``input_pipeline``), step timing (``profiling``) and op counting (``op_count``). It may import the
runtime, the option table, ``models`` and ``data``, and never the evaluation, the runner, the
study or a command (decision 49): the validation passes made during training are handed to
:func:`train.engine.loop.train_stage` as a function by the runner.
"""
