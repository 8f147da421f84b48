-- Where each package is in the pipeline, and since when: the one definition of the stages
-- that `ccat status` (observation_progress.sql) and the HTTP API's progress
-- (observation_progress_of.sql) show. A plain view: PostgreSQL inlines it into each query.
CREATE VIEW package_progress AS
SELECT p.id AS package_id, p.executed_obs_unit_id, p.name AS package,
       CASE
           WHEN p.archived_at IS NOT NULL THEN 'archived'
           WHEN p.status = 'FAILED' THEN 'failed'
           WHEN p.status <> 'COMPLETED' THEN 'packaging'
           WHEN p.data_transfer_package_id IS NULL THEN 'waiting for a bundle'
           WHEN d.status <> 'COMPLETED' THEN 'bundling'
           WHEN t.pending_transfer IS NOT NULL THEN 'transferring'
           WHEN t.pending_unpack IS NOT NULL THEN 'unpacking'
           ELSE 'archiving'
       END AS stage,
       CASE
           WHEN p.archived_at IS NOT NULL THEN p.archived_at
           WHEN p.status <> 'COMPLETED' OR p.data_transfer_package_id IS NULL THEN p.status_changed_at
           WHEN d.status <> 'COMPLETED' THEN d.status_changed_at
           ELSE coalesce(t.pending_transfer, t.pending_unpack, d.status_changed_at)
       END AS since
FROM raw_data_package AS p
LEFT JOIN data_transfer_package AS d ON d.id = p.data_transfer_package_id
LEFT JOIN LATERAL (
    SELECT min(x.status_changed_at) FILTER (WHERE x.status <> 'COMPLETED') AS pending_transfer,
           min(x.unpack_status_changed_at) FILTER (WHERE x.status = 'COMPLETED' AND x.unpack
                                                     AND x.unpack_status <> 'COMPLETED') AS pending_unpack
    FROM data_transfer AS x
    WHERE x.data_transfer_package_id = p.data_transfer_package_id
) AS t ON true;
