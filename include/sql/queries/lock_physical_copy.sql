SELECT id, status FROM physical_copy WHERE id = %(id)s FOR UPDATE;
