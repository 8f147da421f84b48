-- Claim files at one SOURCE location that are in no package yet, with the names the
-- package name is built from. Row locks are held until the planning transaction ends;
-- SKIP LOCKED lets an overlapping run pass by instead of packaging the same files.
-- The claim runs first on raw_data_file alone (served by raw_data_file_unpackaged);
-- joining afterwards keeps the planner from walking every executed_obs_unit.
WITH claimed AS MATERIALIZED (
    SELECT id, executed_obs_unit_id, instrument_module_id, relative_path, size_bytes, checksum
    FROM raw_data_file
    WHERE source_location_id = %(location_id)s
      AND raw_data_package_id IS NULL
    ORDER BY executed_obs_unit_id, instrument_module_id, relative_path
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
SELECT f.id, f.executed_obs_unit_id, f.instrument_module_id, f.relative_path, f.size_bytes, f.checksum,
       e.start_time, o.name AS obs_unit, i.name AS instrument, m.name AS module
FROM claimed AS f
JOIN executed_obs_unit AS e ON e.id = f.executed_obs_unit_id
JOIN obs_unit AS o ON o.id = e.obs_unit_id
JOIN instrument_module AS m ON m.id = f.instrument_module_id
JOIN instrument AS i ON i.id = m.instrument_id
ORDER BY f.executed_obs_unit_id, f.instrument_module_id, f.relative_path;
