-- Guarded move of one row's status column (states.move): zero rows means the row was not
-- in the expected state. Entering a state records its reason; leaving it clears it.
-- ops-db's trigger (migration 0007) refuses any move not in the transition table.
UPDATE {table}
SET {column} = %(new)s,
    {changed_at} = now(),
    {reason} = %(reason)s
WHERE id = %(id)s
  AND {column} = %(expected)s
RETURNING id;
