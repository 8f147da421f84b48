"""CCAT data transfer: Airflow operators, hooks and the ops-db toolkit behind them.

The package is importable two ways: from Airflow's ``plugins/`` folder (Airflow puts
it on ``sys.path``) and as an installed distribution, which also provides the ``ccat``
console command. Nothing here touches the network or a database at import time.
"""

__version__ = "0.1.0"
