-- A try failed through a fault of the package itself (its buffer copy does not match,
-- the server refused its bytes): count it. Faults of the storage are never counted.
UPDATE long_term_archive_transfer SET attempts = attempts + 1
WHERE id = %(id)s AND status = 'IN_PROGRESS'
RETURNING attempts;
