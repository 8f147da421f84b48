UPDATE staging_job_package SET status = %(status)s
WHERE staging_job_id = %(job_id)s AND raw_data_package_id = %(package_id)s;
