-- Serialize the archive records of one package: each archive's record takes this row lock
-- before it adds its copy and asks mark_package_archived whether every archive now holds
-- one. Without it, two archives recording at once would each miss the other's
-- uncommitted copy, and the package would never be marked ARCHIVED.
SELECT id FROM raw_data_package WHERE id = %(id)s FOR NO KEY UPDATE;
