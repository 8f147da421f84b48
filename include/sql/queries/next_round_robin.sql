-- Advance an origin site's round-robin position atomically and return it (0-based).
-- Concurrent routers serialise on the row; the position survives restarts.
INSERT INTO round_robin_state (origin_site_id, last_index)
VALUES (%(site_id)s, 0)
ON CONFLICT (origin_site_id) DO UPDATE
    SET last_index = (round_robin_state.last_index + 1) %% %(count)s, updated_at = now()
RETURNING last_index;
