"""The runtime every room of ``train`` runs on: processes and their launch (``distributed``) and end
(``leaving``), the signals that stop a run with a checkpoint (``preemption``), checkpoint files
written atomically and read without running code (``checkpoint``) with the one-line errors of
unusable files (``checkpoint_errors``), and the training logs and progress bars (``logging_utils``).
It is the bottom room: it imports nothing of ``train`` outside itself (decision 49), so the data
loaders (which raise its errors and draw its progress bars) and the option table can use it.
"""
