-- An operator retried a FAILED transfer: its counted faults start again (not a status write).
UPDATE data_transfer SET faults = 0 WHERE id = %(id)s RETURNING id;
