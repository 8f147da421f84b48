SELECT count(*) AS files,
       sum(size_bytes) AS bytes,
       count(*) FILTER (WHERE raw_data_package_id IS NULL) AS unpackaged
FROM raw_data_file;
