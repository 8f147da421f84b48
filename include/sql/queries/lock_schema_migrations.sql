-- Serialise concurrent `ccat db upgrade` runs for the rest of the transaction.
SELECT pg_advisory_xact_lock(hashtext('ccat_schema_migrations'));
