SELECT * FROM retention_policy WHERE data_location_id = %(location_id)s;
