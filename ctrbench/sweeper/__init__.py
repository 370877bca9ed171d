"""ctrbench's Hydra sweepers: Optuna (``hydra/sweeper=optuna``, without hydra-optuna-sweeper) and a
duplicate-free basic grid sweeper.

- :mod:`~ctrbench.sweeper.config` — the options (``hydra.sweeper.*``);
- :mod:`~ctrbench.sweeper.space` — Hydra sweep syntax → Optuna distributions;
- :mod:`~ctrbench.sweeper.optuna_sweeper` — the sweeper (ask, launch, tell, ``optuna.csv``);
- :mod:`~ctrbench.sweeper.pruning` — the job's side: per-epoch reports and pruning;
- :mod:`~ctrbench.sweeper.storage` — storages (in memory, RDB URL, journal file), samplers, pruners;
- :mod:`~ctrbench.sweeper.basic` — Hydra's grid sweeper without repeated combinations
  (``hydra/sweeper=basic``, the default);
- :mod:`~ctrbench.sweeper.jobs` — job numbers that never reuse a folder; the jobs a command launched, for
  the summary;
- :mod:`~ctrbench.sweeper.plugin` — importing it registers both sweepers with Hydra.

Importing this package imports neither Optuna nor Hydra's plugin registry.
"""
