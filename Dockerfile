# The image every Airflow service and site worker in docker-compose.yaml runs.
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends rsync openssh-client \
    && rm -rf /var/lib/apt/lists/*

USER airflow
COPY requirements.txt constraints.txt /opt/ccat/
RUN pip install --no-cache-dir -r /opt/ccat/requirements.txt -c /opt/ccat/constraints.txt
# Only the runtime package: the development tools (dev/ccat_dev: private PostgreSQL, S3,
# Airflow for the demo and tests) are neither copied nor installed (.dockerignore keeps them
# out of the build context too).
COPY pyproject.toml README.md /opt/ccat/
COPY plugins/ccat_operators /opt/ccat/plugins/ccat_operators
RUN pip install --no-cache-dir --no-deps /opt/ccat
