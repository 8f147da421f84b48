# The image every Airflow service and site worker in docker-compose.yaml runs.
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends rsync openssh-client \
    && rm -rf /var/lib/apt/lists/*

USER airflow
COPY requirements.txt constraints.txt /opt/ccat/
RUN pip install --no-cache-dir -r /opt/ccat/requirements.txt -c /opt/ccat/constraints.txt
COPY pyproject.toml README.md /opt/ccat/
COPY plugins /opt/ccat/plugins
RUN pip install --no-cache-dir --no-deps /opt/ccat
