UPDATE data_transfer SET bytes_sent = %(bytes_sent)s, seconds = %(seconds)s
WHERE id = %(id)s AND status = 'IN_PROGRESS';
