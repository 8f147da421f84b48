UPDATE data_transfer_package
SET size_bytes = %(size_bytes)s, checksum = %(checksum)s
WHERE id = %(id)s AND status = 'IN_PROGRESS';
