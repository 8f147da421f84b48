UPDATE data_transfer_log SET succeeded = %(succeeded)s WHERE data_transfer_id = %(transfer_id)s AND attempt = %(attempt)s;
