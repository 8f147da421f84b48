-- Size and checksum of a package whose tar was written and verified.
UPDATE raw_data_package
SET size_bytes = %(size_bytes)s, checksum = %(checksum)s
WHERE id = %(id)s AND status = 'IN_PROGRESS';
