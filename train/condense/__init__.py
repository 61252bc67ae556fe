"""Dataset condensation of object point clouds (the DD3D task): the condensed-set file, the
methods that make one, and the protocol that judges one (``docs/condense.md``,
decisions 70-73).

Modules: ``condensed_file`` (``<out>/condensed.npz``: one writer, one reader), ``coreset`` (the
Random, Herding and K-Center rules), ``features`` (their feature space: a cached lightweight
PointNet), ``matching_loops``, ``explicit``, ``trajectory``, ``generator``, ``rotator``, ``dd3d``
and ``distill_checkpoint`` (the distillation methods: gradient, distribution and trajectory
matching, DD3D, their checkpoints; decisions 78-80), ``resample`` (a DD3D set evaluated on fresh draws
of its generator, decision 85), ``methods`` (the table of methods by name and
``condense_set``), ``augment``,
``training`` (a backbone trained from scratch on a set, in one process or several), ``metrics``
and ``protocol`` (runs scored on the last step, mean and 95% interval), ``data`` (which data a set
is read from), ``table`` (the coreset table of the embedded data set), ``pictures`` (real and condensed
clouds side by side, DD3D Figure 6), ``command`` (the options,
forms and refusals of ``python -m train.condense``, run by ``__main__``), ``out_folder`` (every
``--out`` checked and a run folder held before any work, decision 90) and ``stop`` (Ctrl-C and
SIGTERM: one line saying what was kept, decision 80). The room imports the
runtime, the object data sets, the object backbones, the study's interval
(``train.study.report.mean_ci``) and the pictures' off-screen matplotlib
(``train.evaluation.palette``); nothing outside it imports it.
"""
