SELECT {column} AS status FROM {table} WHERE id = %(id)s;
