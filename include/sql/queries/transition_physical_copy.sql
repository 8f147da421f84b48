-- Guarded PhysicalCopy state change; zero rows means it was not in the expected state.
UPDATE physical_copy
SET status = %(new)s,
    status_changed_at = now(),
    failure_reason = %(failure_reason)s
WHERE id = %(id)s
  AND status = %(expected)s
RETURNING id;
