"""Typed records of ops-db query results: one small frozen dataclass per result shape.

Every named query (``include/sql/queries/<name>.sql``) that returns more than one column
has its record in :data:`QUERY_RECORDS`; :class:`ccat_operators.opsdb.OpsDb` builds it
for every row, so code reads ``transfer.checksum``, not ``transfer["checksum"]``, and a
column renamed in SQL is caught by ``tests/test_rows.py`` (which describes every query
against the migrated schema and compares its columns and types with its record), not by
a worker at run time. Queries of one column are read with ``fetch_value`` /
``fetch_column`` and need no record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID


@dataclass(frozen=True, slots=True)
class LocationRow:
    """A data location with its site's short name."""

    id: int
    site_id: int
    name: str
    location_type: str
    storage_type: str
    priority: int
    active: bool
    root_path: str | None
    host: str | None
    s3_endpoint_url: str | None
    s3_bucket: str | None
    s3_region: str | None
    s3_prefix: str | None
    s3_conn_id: str | None
    tape_library: str | None
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    site: str


@dataclass(frozen=True, slots=True)
class TopologyLocationRow:
    """A data location as ``ccat topology show`` prints it, with its retention."""

    id: int
    site_id: int
    name: str
    location_type: str
    storage_type: str
    priority: int
    active: bool
    root_path: str | None
    host: str | None
    s3_endpoint_url: str | None
    s3_bucket: str | None
    s3_region: str | None
    s3_prefix: str | None
    s3_conn_id: str | None
    tape_library: str | None
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    site: str
    retention_period: timedelta
    disk_pressure_threshold: float | None
    min_lta_copies: int


@dataclass(frozen=True, slots=True)
class ActiveLocationRow:
    """An active location, for queue discovery."""

    id: int
    name: str
    location_type: str
    storage_type: str
    priority: int
    root_path: str | None
    settings: dict[str, Any]
    site: str


@dataclass(frozen=True, slots=True)
class BufferRow:
    """An active BUFFER of a site, in priority order."""

    id: int
    name: str
    root_path: str | None
    settings: dict[str, Any]
    priority: int


@dataclass(frozen=True, slots=True)
class RouteRow:
    """An active route override between two sites."""

    id: int
    name: str
    route_type: str
    origin_site_id: int
    destination_site_id: int
    via_site_id: int | None
    origin_location_id: int | None
    destination_location_id: int | None
    method: str
    settings: dict[str, Any]
    active: bool
    updated_at: datetime
    via_site: str


@dataclass(frozen=True, slots=True)
class TopologyRouteRow:
    """A route as ``ccat topology show`` prints it."""

    name: str
    route_type: str
    method: str
    settings: dict[str, Any]
    active: bool
    origin_site: str
    destination_site: str
    via_site: str
    origin_location: str | None
    destination_location: str | None


@dataclass(frozen=True, slots=True)
class SiteRow:
    """A site."""

    short_name: str
    name: str
    location: str | None


@dataclass(frozen=True, slots=True)
class ArchiveSiteRow:
    """A site with an active long-term archive."""

    id: int
    short_name: str


@dataclass(frozen=True, slots=True)
class MigrationRow:
    """An applied migration."""

    version: str
    filename: str
    sha256: str
    applied_at: datetime


@dataclass(frozen=True, slots=True)
class ArchiveCopyRow:
    """A verified copy of a package in an S3 archive, with the archive's access details."""

    path: str
    location_id: int
    name: str
    s3_bucket: str | None
    s3_prefix: str | None
    s3_endpoint_url: str | None
    s3_region: str | None
    s3_conn_id: str | None
    site_id: int
    site: str


@dataclass(frozen=True, slots=True)
class InterventionRow:
    """An archive transfer that needs an operator."""

    id: int
    package: str
    attempts: int
    failure_reason: str | None
    status_changed_at: datetime


@dataclass(frozen=True, slots=True)
class CopyStateRow:
    """A physical copy's status."""

    id: int
    status: str


@dataclass(frozen=True, slots=True)
class WorkItemRow:
    """A unit of work found or claimed: its id and a name for logs and results."""

    id: int
    name: str


@dataclass(frozen=True, slots=True)
class UnfinishedRow:
    """Work left SCHEDULED or IN_PROGRESS (a dead worker's, if its lease is free)."""

    id: int
    name: str
    status: str


@dataclass(frozen=True, slots=True)
class UnbundledPackageRow:
    """A completed package in a buffer, not yet in a bundle."""

    id: int
    name: str
    size_bytes: int | None
    checksum: str | None
    completed_at: datetime
    path: str


@dataclass(frozen=True, slots=True)
class UnpackagedFileRow:
    """A filed raw file not yet in a package, with what names its package."""

    id: UUID
    executed_obs_unit_id: int
    instrument_module_id: int
    relative_path: str
    size_bytes: int
    checksum: str
    start_time: datetime
    obs_unit: str
    instrument: str
    module: str


@dataclass(frozen=True, slots=True)
class UnroutedBundleRow:
    """A written bundle without its transfers yet."""

    id: int
    name: str
    origin_location_id: int
    origin_site_id: int


@dataclass(frozen=True, slots=True)
class TransferRow:
    """A DataTransfer with everything needed to send, verify and unpack it."""

    id: int
    data_transfer_package_id: int
    origin_location_id: int
    destination_location_id: int
    route_id: int | None
    method: str
    status: str
    unpack_status: str
    unpack: bool
    attempts: int
    redeliveries: int
    failure_reason: str | None
    unpack_failure_reason: str | None
    depends_on_transfer_id: int | None
    bundle: str
    size_bytes: int | None
    checksum: str | None
    origin_root: str | None
    destination_root: str | None
    destination_settings: dict[str, Any]
    destination_name: str
    destination_site: str
    origin_site: str
    route_settings: dict[str, Any]
    depends_on_status: str


@dataclass(frozen=True, slots=True)
class BundleRow:
    """A DataTransferPackage with its origin buffer."""

    id: int
    name: str
    origin_location_id: int
    size_bytes: int | None
    checksum: str | None
    status: str
    failure_reason: str | None
    attempts: int
    created_at: datetime
    status_changed_at: datetime
    routed_at: datetime | None
    origin_root: str | None
    origin_settings: dict[str, Any]
    origin_name: str
    origin_site: str


@dataclass(frozen=True, slots=True)
class LocationKeyRow:
    """A location named by site and location name."""

    site: str
    name: str


@dataclass(frozen=True, slots=True)
class PackageFileRow:
    """A raw file of a package, with its identity at filing."""

    id: UUID
    relative_path: str
    size_bytes: int
    checksum: str
    inode: Decimal | None
    mtime_ns: int | None


@dataclass(frozen=True, slots=True)
class DeletableCopyRow:
    """A copy the retention rules allow to delete."""

    id: int
    path: str


@dataclass(frozen=True, slots=True)
class ScheduledDeletionRow:
    """A copy scheduled for (or half-way through) deletion, with the size its files must have."""

    id: int
    status: str
    path: str
    checksum: str | None
    raw_data_package_id: int | None
    data_transfer_package_id: int | None
    staging_job_id: int | None
    staging_job: str
    package_size: int | None
    bundle_size: int | None


@dataclass(frozen=True, slots=True)
class StuckRow:
    """A work item IN_PROGRESS for long."""

    id: int
    status_changed_at: datetime


@dataclass(frozen=True, slots=True)
class InstrumentModuleRow:
    """An instrument's module, by name."""

    instrument: str
    module: str


@dataclass(frozen=True, slots=True)
class ModuleRow:
    """A module of one instrument."""

    id: int
    name: str


@dataclass(frozen=True, slots=True)
class ArchiveTransferRow:
    """A LongTermArchiveTransfer with its package, origin buffer and S3 archive."""

    id: int
    raw_data_package_id: int
    origin_location_id: int
    destination_location_id: int
    status: str
    attempts: int
    requires_intervention: bool | None
    failure_reason: str | None
    created_at: datetime
    status_changed_at: datetime
    package: str
    relative_path: str
    size_bytes: int | None
    checksum: str | None
    origin_root: str | None
    s3_bucket: str | None
    s3_prefix: str | None
    s3_endpoint_url: str | None
    s3_region: str | None
    s3_conn_id: str | None
    destination_settings: dict[str, Any]
    destination_site: str
    destination_name: str


@dataclass(frozen=True, slots=True)
class ProgressRow:
    """Where one package of an unfinished observation stands."""

    observation: int
    obs_unit: str
    start_time: datetime
    package: str
    stage: str | None
    since: datetime | None


@dataclass(frozen=True, slots=True)
class ObservatoryRow:
    """The observatory and its telescope."""

    observatory: str
    telescope: str


@dataclass(frozen=True, slots=True)
class BundleMemberRow:
    """A package of a bundle with its tar's path in the bundle's buffer."""

    id: int
    name: str
    relative_path: str
    size_bytes: int | None
    checksum: str | None
    path: str


@dataclass(frozen=True, slots=True)
class PackageMemberRow:
    """A package of a bundle, as a member of the bundle's tar."""

    id: int
    name: str
    relative_path: str
    size_bytes: int | None
    checksum: str | None


@dataclass(frozen=True, slots=True)
class CopyCountRow:
    """How many copies are in one state at one type of location."""

    location_type: str
    status: str
    copies: int | None


@dataclass(frozen=True, slots=True)
class StateCountRow:
    """How many items of a stage are in one state, and the oldest."""

    stage: str | None
    status: str | None
    items: int | None
    oldest: datetime | None


@dataclass(frozen=True, slots=True)
class FiledFileRow:
    """A raw file as it was filed."""

    id: UUID
    relative_path: str
    executed_obs_unit_id: int
    instrument_module_id: int
    size_bytes: int
    checksum: str


@dataclass(frozen=True, slots=True)
class PackageRow:
    """A RawDataPackage with its source location's root and site."""

    id: int
    name: str
    executed_obs_unit_id: int
    instrument_module_id: int
    source_location_id: int
    relative_path: str
    size_bytes: int | None
    checksum: str | None
    oversized: bool
    status: str
    failure_reason: str | None
    attempts: int
    data_transfer_package_id: int | None
    archived_at: datetime | None
    created_at: datetime
    status_changed_at: datetime
    source_root: str | None
    site: str


@dataclass(frozen=True, slots=True)
class RetentionRow:
    """A location's retention policy."""

    data_location_id: int
    retention_period: timedelta
    disk_pressure_threshold: float | None
    min_lta_copies: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class StagingJobRow:
    """A StagingJob."""

    id: int
    name: str
    requested_by: str | None
    destination_location_id: int
    request: dict[str, Any]
    retention_period: timedelta | None
    status: str
    failure_reason: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StagingGenerationRow:
    """A generation of a staging request and how many of its staged copies are gone."""

    name: str
    expired_copies: int | None


@dataclass(frozen=True, slots=True)
class StagingPackageRow:
    """A package of a staging job and how its staging ended."""

    id: int
    status: str
    name: str
    relative_path: str
    size_bytes: int | None
    checksum: str | None


@dataclass(frozen=True, slots=True)
class FileSummaryRow:
    """Filed files: how many, how large, how many not packaged."""

    files: int | None
    bytes: Decimal | None
    unpackaged: int | None


@dataclass(frozen=True, slots=True)
class TableSizeRow:
    """A table's estimated rows and size."""

    relname: str
    estimated_rows: int | None
    total_size: str | None


@dataclass(frozen=True, slots=True)
class UpsertedRow:
    """The id of a row an upsert changed, and whether it inserted it."""

    id: int
    inserted: bool | None


@dataclass(frozen=True, slots=True)
class ExecutedObsUnitRow:
    """An executed obs unit as filed."""

    id: int
    end_time: datetime | None


@dataclass(frozen=True, slots=True)
class WaitingRow:
    """Work that waits or will be tried again, with the reason of its last try."""

    stage: str | None
    name: str | None
    reason: str | None
    since: datetime | None


@dataclass(frozen=True, slots=True)
class InterventionItemRow:
    """Work of any stage that waits for an operator, named as ``ccat retry <kind> <id>`` names it."""

    kind: str
    id: int
    name: str
    reason: str | None
    since: datetime


@dataclass(frozen=True, slots=True)
class AuditCopyRow:
    """A copy at a location, as the audit checks it (``due``: to be re-read this run)."""

    id: int
    status: str
    path: str
    checksum: str | None
    raw_data_package_id: int | None
    data_transfer_package_id: int | None
    package_size: int | None
    bundle_size: int | None
    name: str | None
    due: bool | None


@dataclass(frozen=True, slots=True)
class FindingRow:
    """An open audit finding."""

    id: int
    location: str | None
    kind: str
    path: str
    detail: str | None
    repair: str | None
    found_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True, slots=True)
class ArchiveTransferIntoRow:
    """The archive transfer of a package into one archive, with its origin buffer."""

    id: int
    status: str
    origin_location_id: int


@dataclass(frozen=True, slots=True)
class TransferIntoRow:
    """The transfer that brought a bundle to a location, and whether its origin still has the bundle."""

    id: int
    status: str
    unpack_status: str
    origin_has_bundle: bool | None


@dataclass(frozen=True, slots=True)
class PackageForRepairRow:
    """A package as a repair needs it."""

    id: int
    name: str
    relative_path: str
    size_bytes: int | None
    checksum: str | None
    data_transfer_package_id: int | None
    archived_at: datetime | None


@dataclass(frozen=True, slots=True)
class ObservationArchiveRow:
    """How far one observation is from being archived in ``min_archives`` archives (ObservationsArchivedSensor)."""

    observation: int
    files: int
    unpackaged_files: int
    packages: int
    archived_packages: int
    #: Up to 5 names of packages not archived enough yet, comma-separated.
    waiting_packages: str | None
    active_archives: int


@dataclass(frozen=True, slots=True)
class FilingRequestRow:
    """An observation filed over HTTP, and its outcome once a worker of its SOURCE location decided it."""

    id: int
    location: str
    requested_by: str
    requested_at: datetime
    #: ``ACCEPTED`` or ``REFUSED``; None while the request is open.
    outcome: str | None
    executed_obs_unit_id: int | None
    new_files: int | None
    already_filed: int | None
    worker: str | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class ClaimedFilingRow:
    """An open filing request a worker holds (locked) while it files it."""

    id: int
    manifest: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ObservationSummaryRow:
    """One observation and its filed files (those not yet packaged among them)."""

    id: int
    program: str
    obs_unit: str
    start_time: datetime
    end_time: datetime | None
    files: int
    size_bytes: int
    unpackaged_files: int


@dataclass(frozen=True, slots=True)
class HttpFilingProgressRow:
    """How far the observations filed over HTTP since a time have gone."""

    first_requested_at: datetime | None
    open_requests: int
    refused_requests: int
    unpackaged_files: int
    filed_bytes: int
    packages: int
    unarchived_packages: int
    last_archived_at: datetime | None


@dataclass(frozen=True, slots=True)
class TaskCostRow:
    """What the tasks of one DAG that succeeded cost: CPU and wall-clock seconds."""

    dag_id: str
    tasks: int | None
    cpu_seconds: float | None
    wall_seconds: float | None


#: The record of every named query that returns more than one column.
QUERY_RECORDS: dict[str, type] = {
    "task_cost_by_dag": TaskCostRow,
    "http_filing_progress": HttpFilingProgressRow,
    "audit_live_copies": AuditCopyRow,
    "audit_broken_copies": AuditCopyRow,
    "open_audit_findings": FindingRow,
    "archive_transfer_into": ArchiveTransferIntoRow,
    "transfer_into": TransferIntoRow,
    "package_for_repair": PackageForRepairRow,
    "work_waiting": WaitingRow,
    "data_location_by_id": LocationRow,
    "data_location_by_key": LocationRow,
    "data_locations": TopologyLocationRow,
    "active_locations": ActiveLocationRow,
    "active_buffers_of_site": BufferRow,
    "active_route_between": RouteRow,
    "routes": TopologyRouteRow,
    "sites": SiteRow,
    "long_term_archive_sites": ArchiveSiteRow,
    "applied_migrations": MigrationRow,
    "archive_copies_of_package": ArchiveCopyRow,
    "archive_transfers_needing_intervention": InterventionRow,
    "bundle_copy_at": CopyStateRow,
    "package_copy_at": CopyStateRow,
    "lock_physical_copy": CopyStateRow,
    "claim_pending_data_transfer_packages": WorkItemRow,
    "claim_pending_raw_data_packages": WorkItemRow,
    "claim_unpackable_transfers": WorkItemRow,
    "find_archive_transfers": WorkItemRow,
    "find_transfers_to_send": WorkItemRow,
    "find_unfinished_data_transfer_packages": UnfinishedRow,
    "find_unfinished_raw_data_packages": UnfinishedRow,
    "claim_unbundled_packages": UnbundledPackageRow,
    "claim_unpackaged_files": UnpackagedFileRow,
    "claim_unrouted_bundles": UnroutedBundleRow,
    "data_transfer": TransferRow,
    "data_transfer_package": BundleRow,
    "deactivate_locations_except": LocationKeyRow,
    "files_of_package": PackageFileRow,
    "find_deletable_bundle_copies": DeletableCopyRow,
    "find_deletable_package_copies": DeletableCopyRow,
    "find_scheduled_deletions": ScheduledDeletionRow,
    "find_stuck_in_progress": StuckRow,
    "instrument_modules": InstrumentModuleRow,
    "instrument_modules_of": ModuleRow,
    "long_term_archive_transfer": ArchiveTransferRow,
    "observation_progress": ProgressRow,
    "observatory_and_telescope": ObservatoryRow,
    "packages_of_bundle": BundleMemberRow,
    "packages_of_bundle_by_id": PackageMemberRow,
    "physical_copy_counts": CopyCountRow,
    "pipeline_state_counts": StateCountRow,
    "raw_data_files_by_path": FiledFileRow,
    "raw_data_package": PackageRow,
    "retention_of_location": RetentionRow,
    "staging_job": StagingJobRow,
    "upsert_staging_job": StagingJobRow,
    "staging_jobs_like": StagingGenerationRow,
    "staging_job_packages": StagingPackageRow,
    "summary_files": FileSummaryRow,
    "table_sizes": TableSizeRow,
    "upsert_data_location": UpsertedRow,
    "upsert_instrument": UpsertedRow,
    "upsert_instrument_module": UpsertedRow,
    "upsert_observatory": UpsertedRow,
    "upsert_retention_policy": UpsertedRow,
    "upsert_route": UpsertedRow,
    "upsert_site": UpsertedRow,
    "upsert_telescope": UpsertedRow,
    "upsert_executed_obs_unit": ExecutedObsUnitRow,
    "work_needing_intervention": InterventionItemRow,
    "observations_archive_state": ObservationArchiveRow,
    "staging_jobs_waiting": WaitingRow,
    "filing_request": FilingRequestRow,
    "claim_filing_request": ClaimedFilingRow,
    "observation_summary": ObservationSummaryRow,
    "observation_progress_of": ProgressRow,
}
