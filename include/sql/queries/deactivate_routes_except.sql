UPDATE data_transfer_route
SET active = false, updated_at = now()
WHERE active AND name <> ALL (%(keep_names)s::text[])
RETURNING name;
