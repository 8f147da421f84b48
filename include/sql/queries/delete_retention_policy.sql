DELETE FROM retention_policy WHERE data_location_id = %(data_location_id)s;
