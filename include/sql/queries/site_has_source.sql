SELECT EXISTS (
    SELECT 1 FROM data_location
    WHERE site_id = %(site_id)s AND active AND location_type = 'SOURCE'
) AS has_source;
