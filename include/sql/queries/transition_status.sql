-- Guarded status change: zero rows means the row was not in the expected state.
-- Leaving FAILED clears the failure reason; entering FAILED records it.
UPDATE {table}
SET status = %(new)s,
    status_changed_at = now(),
    failure_reason = %(failure_reason)s
WHERE id = %(id)s
  AND status = %(expected)s
RETURNING id;
