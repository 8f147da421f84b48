-- The audit re-read a live copy and it is still the recorded bytes.
UPDATE physical_copy SET verified_at = now()
WHERE id = %(id)s AND status IN ('PRESENT', 'STAGED')
RETURNING id;
