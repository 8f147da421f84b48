SELECT id FROM instrument_module WHERE instrument_id = %(instrument_id)s AND name = %(name)s;
