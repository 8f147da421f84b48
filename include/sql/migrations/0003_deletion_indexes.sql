-- Deletion and archive work finding at scale (measured by bench/opsdb_scale.py).

-- Copies at one location in given states, in id order: the deletion stage's scan.
-- Replaces two partial indexes whose predicates a parameterised status list cannot use.
DROP INDEX physical_copy_deletion_work;
DROP INDEX physical_copy_live_by_location;
CREATE INDEX physical_copy_location_status ON physical_copy (data_location_id, status, id);
-- Location and status are strongly correlated (old copies are DELETED, live ones few):
-- without joint statistics the planner takes "live copies at a buffer" for half the table.
CREATE STATISTICS physical_copy_location_status_stats (mcv) ON data_location_id, status FROM physical_copy;

-- "Is any archive transfer of this package unfinished?" without scanning the history.
CREATE INDEX long_term_archive_transfer_unfinished ON long_term_archive_transfer (raw_data_package_id)
    WHERE status <> 'COMPLETED';

-- ops-db runs short work-finding queries: JIT compilation costs more than it saves.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET jit = off', current_database());
END
$$;
