-- Guarded: a file already in a package is never moved to another.
UPDATE raw_data_file
SET raw_data_package_id = %(package_id)s
WHERE id = ANY (%(file_ids)s::uuid[])
  AND raw_data_package_id IS NULL;
