UPDATE long_term_archive_transfer SET attempts = attempts + 1
WHERE id = %(id)s AND status = 'IN_PROGRESS'
RETURNING attempts;
