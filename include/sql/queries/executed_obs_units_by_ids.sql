SELECT id FROM executed_obs_unit WHERE id = ANY (%(ids)s::bigint[]) ORDER BY id;
