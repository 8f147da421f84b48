-- Where each package of one observation is, and since when, archived ones included
-- (the stages of the package_progress view, as `ccat status` shows them).
SELECT e.id AS observation, o.name AS obs_unit, e.start_time, g.package, g.stage, g.since
FROM executed_obs_unit AS e
JOIN obs_unit AS o ON o.id = e.obs_unit_id
JOIN package_progress AS g ON g.executed_obs_unit_id = e.id
WHERE e.id = %(id)s
ORDER BY g.package_id;
