-- How many items %(stage)s finished at or after %(since)s (the start of a DAG run): the
-- new work it handed to the next stage. Each branch is served by a status index.
SELECT count(*) FROM (
    SELECT 1 FROM filing_request
    WHERE %(stage)s = 'filing' AND outcome = 'ACCEPTED' AND new_files > 0 AND finished_at >= %(since)s
    UNION ALL
    SELECT 1 FROM raw_data_package
    WHERE %(stage)s = 'packaging' AND status = 'COMPLETED' AND status_changed_at >= %(since)s
    UNION ALL
    SELECT 1 FROM data_transfer_package
    WHERE %(stage)s = 'bundling' AND status = 'COMPLETED' AND status_changed_at >= %(since)s
    UNION ALL
    SELECT 1 FROM data_transfer
    WHERE %(stage)s = 'transfer' AND status = 'COMPLETED' AND status_changed_at >= %(since)s
    UNION ALL
    SELECT 1 FROM data_transfer
    WHERE %(stage)s = 'unpacking' AND status = 'COMPLETED' AND unpack_status = 'COMPLETED'
      AND unpack_status_changed_at >= %(since)s
    UNION ALL
    SELECT 1 FROM long_term_archive_transfer
    WHERE %(stage)s = 'archive' AND status = 'COMPLETED' AND status_changed_at >= %(since)s
) AS finished;
