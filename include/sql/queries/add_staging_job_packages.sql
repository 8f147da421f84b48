INSERT INTO staging_job_package (staging_job_id, raw_data_package_id)
SELECT %(job_id)s, p.id
FROM raw_data_package AS p
WHERE p.executed_obs_unit_id = ANY (%(observation_ids)s::bigint[])
  AND p.status = 'COMPLETED'
ON CONFLICT DO NOTHING;
