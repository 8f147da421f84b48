INSERT INTO data_transfer_log (data_transfer_id, attempt, log_path)
VALUES (%(transfer_id)s, %(attempt)s, %(log_path)s)
ON CONFLICT (data_transfer_id, attempt) DO UPDATE SET log_path = EXCLUDED.log_path, succeeded = NULL
RETURNING id;
