"""Resolving and checking the options of ``python -m train.run`` whose table is :mod:`train.config`:
the command-line parser and the YAML file of ``--config`` (``resolve``), the defaults that depend on
the data set and the machine (``defaults``) and the checks of the resolved values (``checks``). It may
import the runtime and the option table (and ``fast.persistence`` and ``reference`` for the
persistence options), never the models, data or a room above them (decision 49).
"""
