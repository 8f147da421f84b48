-- Returns a row only when the location was created or changed.
INSERT INTO data_location (
    site_id, name, location_type, storage_type, priority, active,
    root_path, host, s3_endpoint_url, s3_bucket, s3_region, s3_prefix, s3_conn_id,
    tape_library, settings
) VALUES (
    %(site_id)s, %(name)s, %(location_type)s, %(storage_type)s, %(priority)s, %(active)s,
    %(root_path)s, %(host)s, %(s3_endpoint_url)s, %(s3_bucket)s, %(s3_region)s, %(s3_prefix)s, %(s3_conn_id)s,
    %(tape_library)s, %(settings)s::jsonb
)
ON CONFLICT (site_id, name) DO UPDATE SET
    location_type = EXCLUDED.location_type,
    storage_type = EXCLUDED.storage_type,
    priority = EXCLUDED.priority,
    active = EXCLUDED.active,
    root_path = EXCLUDED.root_path,
    host = EXCLUDED.host,
    s3_endpoint_url = EXCLUDED.s3_endpoint_url,
    s3_bucket = EXCLUDED.s3_bucket,
    s3_region = EXCLUDED.s3_region,
    s3_prefix = EXCLUDED.s3_prefix,
    s3_conn_id = EXCLUDED.s3_conn_id,
    tape_library = EXCLUDED.tape_library,
    settings = EXCLUDED.settings,
    updated_at = now()
WHERE (
    data_location.location_type, data_location.storage_type, data_location.priority, data_location.active,
    data_location.root_path, data_location.host, data_location.s3_endpoint_url, data_location.s3_bucket,
    data_location.s3_region, data_location.s3_prefix, data_location.s3_conn_id, data_location.tape_library,
    data_location.settings
) IS DISTINCT FROM (
    EXCLUDED.location_type, EXCLUDED.storage_type, EXCLUDED.priority, EXCLUDED.active,
    EXCLUDED.root_path, EXCLUDED.host, EXCLUDED.s3_endpoint_url, EXCLUDED.s3_bucket,
    EXCLUDED.s3_region, EXCLUDED.s3_prefix, EXCLUDED.s3_conn_id, EXCLUDED.tape_library,
    EXCLUDED.settings
)
RETURNING id, (xmax = 0) AS inserted;
