-- One observation (ExecutedObsUnit): its program, obs unit, times, and its filed files,
-- those not yet in a package among them.
SELECT e.id, g.name AS program, o.name AS obs_unit, e.start_time, e.end_time,
       count(f.id) AS files,
       coalesce(sum(f.size_bytes), 0)::bigint AS size_bytes,
       count(f.id) FILTER (WHERE f.raw_data_package_id IS NULL) AS unpackaged_files
FROM executed_obs_unit AS e
JOIN obs_unit AS o ON o.id = e.obs_unit_id
JOIN observing_program AS g ON g.id = o.observing_program_id
LEFT JOIN raw_data_file AS f ON f.executed_obs_unit_id = e.id
WHERE e.id = %(id)s
GROUP BY e.id, g.name, o.name;
