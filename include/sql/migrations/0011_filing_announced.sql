-- ccat_filing announces the observations it filed (the asset ccat_observations_filed,
-- which starts ccat_packaging): count_stage_output_since.sql finds them by this index.
CREATE INDEX filing_request_accepted ON filing_request (finished_at) WHERE outcome = 'ACCEPTED' AND new_files > 0;
