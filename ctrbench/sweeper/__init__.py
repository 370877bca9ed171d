"""ctrbench's Hydra sweeper on Optuna (``hydra/sweeper=optuna``), without hydra-optuna-sweeper.

- :mod:`~ctrbench.sweeper.config` — the options (``hydra.sweeper.*``);
- :mod:`~ctrbench.sweeper.space` — Hydra sweep syntax → Optuna distributions;
- :mod:`~ctrbench.sweeper.optuna_sweeper` — the sweeper (ask, launch, tell, ``optuna.csv``);
- :mod:`~ctrbench.sweeper.pruning` — the job's side: per-epoch reports and pruning;
- :mod:`~ctrbench.sweeper.storage` — storages (in memory, RDB URL, journal file), samplers, pruners;
- :mod:`~ctrbench.sweeper.plugin` — importing it registers the plugin with Hydra.

Importing this package imports neither Optuna nor Hydra's plugin registry.
"""
