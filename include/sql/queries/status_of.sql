SELECT status FROM {table} WHERE id = %(id)s;
