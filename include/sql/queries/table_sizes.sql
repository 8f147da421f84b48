-- Row estimate and on-disk size (with indexes) of every non-empty ops-db table.
SELECT c.relname, c.reltuples::bigint AS estimated_rows,
       pg_size_pretty(pg_total_relation_size(c.oid)) AS total_size
FROM pg_class AS c
WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace AND c.reltuples > 0
ORDER BY c.reltuples DESC;
