-- Routing and transfer execution.
--
-- A DataTransferPackage gets all its DataTransfers in one routing transaction: the
-- primary leg from its origin buffer, relay legs, and the secondary (LTA -> LTA) legs
-- that fan out from the first LTA site. A leg whose origin copy only exists once an
-- earlier leg has arrived names that leg in depends_on_transfer_id.

ALTER TABLE data_transfer_package ADD COLUMN routed_at timestamptz;
CREATE INDEX data_transfer_package_unrouted ON data_transfer_package (origin_location_id, id)
    WHERE status = 'COMPLETED' AND routed_at IS NULL;

ALTER TABLE data_transfer
    ADD COLUMN depends_on_transfer_id bigint REFERENCES data_transfer (id),
    ADD COLUMN unpack boolean NOT NULL DEFAULT true,
    ADD COLUMN unpack_failure_reason text,
    ADD COLUMN unpack_status_changed_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN bytes_sent bigint,
    ADD COLUMN seconds double precision;
CREATE INDEX data_transfer_dependency ON data_transfer (depends_on_transfer_id)
    WHERE depends_on_transfer_id IS NOT NULL;

DROP INDEX data_transfer_unpack_work;
CREATE INDEX data_transfer_unpack_work ON data_transfer (destination_location_id, unpack_status, id)
    WHERE status = 'COMPLETED' AND unpack AND unpack_status IN ('PENDING', 'SCHEDULED', 'IN_PROGRESS');
CREATE INDEX data_transfer_unpack_stuck ON data_transfer (unpack_status_changed_at) WHERE unpack_status = 'IN_PROGRESS';
