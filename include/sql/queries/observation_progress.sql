-- Where each package of the unfinished observations is, and since when (the stages of
-- the package_progress view). Unfinished: at least one package not ARCHIVED; newest
-- observations first.
WITH unfinished AS (
    SELECT e.id, e.start_time, o.name AS obs_unit
    FROM executed_obs_unit AS e
    JOIN obs_unit AS o ON o.id = e.obs_unit_id
    WHERE EXISTS (SELECT 1 FROM raw_data_package AS p WHERE p.executed_obs_unit_id = e.id AND p.archived_at IS NULL)
    ORDER BY e.start_time DESC
    LIMIT %(limit)s
)
SELECT u.id AS observation, u.obs_unit, u.start_time, g.package, g.stage, g.since
FROM unfinished AS u
JOIN package_progress AS g ON g.executed_obs_unit_id = u.id
ORDER BY u.start_time DESC, g.package_id;
