"""Hyperparameter search over the training stages, on Optuna: ``python -m distill.tune``.

``space`` reads the search space, ``trial`` runs one configuration as a real training command,
``study`` holds the Optuna study (storage, sampler, resume), ``report`` writes the results and
``cli`` is the command line.
"""
