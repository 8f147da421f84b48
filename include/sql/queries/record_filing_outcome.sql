-- A filing request's outcome, in the transaction that filed it (or refused it). Written
-- once: an already decided request is left alone here, and ops-db refuses any change to it.
UPDATE filing_request
SET outcome = %(outcome)s, problems = %(problems)s, executed_obs_unit_id = %(executed_obs_unit_id)s,
    new_files = %(new_files)s, already_filed = %(already_filed)s, worker = %(worker)s, finished_at = now()
WHERE id = %(id)s AND outcome IS NULL;
