-- A try failed through a fault of the bundle itself (it arrived wrong): count it.
-- Faults of the network, ssh or a full disk are never counted.
UPDATE data_transfer SET faults = faults + 1
WHERE id = %(id)s AND status = 'IN_PROGRESS'
RETURNING faults;
