-- Run once by the postgres container on first start: ops-db beside Airflow's metadata DB.
CREATE USER ccat WITH PASSWORD 'ccat';
CREATE DATABASE ccat_ops_db OWNER ccat;
