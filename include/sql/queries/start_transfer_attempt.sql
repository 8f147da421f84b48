-- Count an attempt of a transfer that is IN_PROGRESS under our lease.
UPDATE data_transfer SET attempts = attempts + 1
WHERE id = %(id)s AND status = 'IN_PROGRESS'
RETURNING attempts;
