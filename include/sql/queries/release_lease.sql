SELECT pg_advisory_unlock(hashtext(%(kind)s), (%(id)s %% 2147483648)::integer) AS released;
