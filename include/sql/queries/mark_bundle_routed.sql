UPDATE data_transfer_package SET routed_at = now()
WHERE id = %(id)s AND routed_at IS NULL;
