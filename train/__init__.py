"""Training, evaluation and the commands of topodistill, in rooms by purpose (decision 49).

From the bottom up, each room importing only from itself and the rooms below it: ``runtime``
(processes, preemption, checkpoint files, logs and progress), the option table (``config``,
``option_names``), ``options`` (resolving and checking them), ``models`` (PTv3), ``data`` (loaders,
transforms, the synthetic simulator), ``engine`` (one stage's training), ``evaluation`` (full-resolution evaluation, metrics, pictures,
model cost), ``runner`` (the stages of one ``python -m train.run``), ``prediction`` (labelling new scans with
a trained model) and ``study`` (the ablation study and its diagnostics). The commands people type
sit on top as thin modules (``train.run``, ``train.predict``, ``train.export_onnx``, ``train.cost``, ``train.export_pointcept``, ``train.topo_diagnostic`` and ``train/study/__main__.py``),
and nothing imports them. ``tests/test_train_layout.py`` keeps this order.
"""
