-- What each stage finished recently (count_stage_output_since.sql, the asset announcements):
-- small partial indexes on the completion time of COMPLETED items.
CREATE INDEX raw_data_package_completed ON raw_data_package (status_changed_at) WHERE status = 'COMPLETED';
CREATE INDEX data_transfer_package_completed ON data_transfer_package (status_changed_at) WHERE status = 'COMPLETED';
CREATE INDEX data_transfer_completed ON data_transfer (status_changed_at) WHERE status = 'COMPLETED';
CREATE INDEX data_transfer_unpacked ON data_transfer (unpack_status_changed_at) WHERE unpack_status = 'COMPLETED';
CREATE INDEX long_term_archive_transfer_completed ON long_term_archive_transfer (status_changed_at)
    WHERE status = 'COMPLETED';
