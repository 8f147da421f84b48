-- How far the observations filed over HTTP since %(since)s have gone (bench/pipeline.py
-- --airflow): when the first request came, the requests still open or refused, the files
-- not in a package yet, the packages not archived yet, the bytes filed, and when the last
-- package was archived.
WITH requests AS (
    SELECT requested_at, outcome, executed_obs_unit_id FROM filing_request WHERE requested_at >= %(since)s
), filed AS (
    SELECT DISTINCT f.id, f.size_bytes, f.raw_data_package_id
    FROM requests r JOIN raw_data_file f ON f.executed_obs_unit_id = r.executed_obs_unit_id
    WHERE r.outcome = 'ACCEPTED'
), packages AS (
    SELECT DISTINCT p.id, p.archived_at
    FROM filed JOIN raw_data_package p ON p.id = filed.raw_data_package_id
)
SELECT (SELECT min(requested_at) FROM requests) AS first_requested_at,
       (SELECT count(*) FROM requests WHERE outcome IS NULL) AS open_requests,
       (SELECT count(*) FROM requests WHERE outcome = 'REFUSED') AS refused_requests,
       (SELECT count(*) FROM filed WHERE raw_data_package_id IS NULL) AS unpackaged_files,
       (SELECT coalesce(sum(size_bytes), 0)::bigint FROM filed) AS filed_bytes,
       (SELECT count(*) FROM packages) AS packages,
       (SELECT count(*) FROM packages WHERE archived_at IS NULL) AS unarchived_packages,
       (SELECT max(archived_at) FROM packages) AS last_archived_at;
