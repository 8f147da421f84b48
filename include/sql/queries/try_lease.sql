-- A lease is a session-level advisory lock: held while a worker works on one row,
-- released by the worker or, if it dies, by PostgreSQL when its connection drops.
SELECT pg_try_advisory_lock(hashtext(%(kind)s), (%(id)s %% 2147483648)::integer) AS acquired;
