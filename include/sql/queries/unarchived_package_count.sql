SELECT count(*) FROM raw_data_package WHERE archived_at IS NULL;
