SELECT id FROM data_location WHERE site_id = %(site_id)s AND name = %(name)s;
