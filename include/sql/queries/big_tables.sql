-- Tables with at least %(rows)s rows by the planner's statistics.
SELECT relname FROM pg_class
WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace AND reltuples >= %(rows)s;
