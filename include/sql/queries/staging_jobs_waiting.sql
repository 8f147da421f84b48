-- Staging jobs PENDING with a reason: waiting for their observations to be archived, or
-- put back by a storage fault to be tried again; oldest first (ccat status, beside
-- work_waiting).
SELECT 'staging_job' AS stage, name, failure_reason AS reason, status_changed_at AS since
FROM staging_job
WHERE status = 'PENDING' AND failure_reason IS NOT NULL
ORDER BY status_changed_at
LIMIT %(limit)s;
