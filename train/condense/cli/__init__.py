"""The command ``python -m train.condense`` and its guards: the forms, options and refusals
(``command``), what a form may write and the run folder it holds, replaced on success
(``out_folder``, decisions 90 and 99), and what a Ctrl-C or SIGTERM keeps (``stop``, decision 80).

The top room of ``train.condense``; only ``train.condense.__main__`` imports it.
"""
