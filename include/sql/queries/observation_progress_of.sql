-- Where each package of one observation is, and since when, archived ones included: the
-- stages and columns of observation_progress.sql (what `ccat status` shows), for one id.
WITH observation AS (
    SELECT e.id, e.start_time, o.name AS obs_unit
    FROM executed_obs_unit AS e
    JOIN obs_unit AS o ON o.id = e.obs_unit_id
    WHERE e.id = %(id)s
)
SELECT u.id AS observation, u.obs_unit, u.start_time, p.name AS package,
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
FROM observation AS u
JOIN raw_data_package AS p ON p.executed_obs_unit_id = u.id
LEFT JOIN data_transfer_package AS d ON d.id = p.data_transfer_package_id
LEFT JOIN LATERAL (
    SELECT min(x.status_changed_at) FILTER (WHERE x.status <> 'COMPLETED') AS pending_transfer,
           min(x.unpack_status_changed_at) FILTER (WHERE x.status = 'COMPLETED' AND x.unpack
                                                     AND x.unpack_status <> 'COMPLETED') AS pending_unpack
    FROM data_transfer AS x
    WHERE x.data_transfer_package_id = p.data_transfer_package_id
) AS t ON true
ORDER BY p.id;
