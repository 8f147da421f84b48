INSERT INTO raw_data_package (name, executed_obs_unit_id, instrument_module_id, source_location_id,
                              relative_path, size_bytes, oversized)
VALUES (%(name)s, %(executed_obs_unit_id)s, %(instrument_module_id)s, %(source_location_id)s,
        %(relative_path)s, %(size_bytes)s, %(oversized)s)
RETURNING id;
