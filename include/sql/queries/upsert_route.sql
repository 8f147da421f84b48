-- Returns a row only when the route was created or changed.
INSERT INTO data_transfer_route (
    name, route_type, origin_site_id, destination_site_id, via_site_id,
    origin_location_id, destination_location_id, method, settings, active
) VALUES (
    %(name)s, %(route_type)s, %(origin_site_id)s, %(destination_site_id)s, %(via_site_id)s,
    %(origin_location_id)s, %(destination_location_id)s, %(method)s, %(settings)s::jsonb, %(active)s
)
ON CONFLICT (name) DO UPDATE SET
    route_type = EXCLUDED.route_type,
    origin_site_id = EXCLUDED.origin_site_id,
    destination_site_id = EXCLUDED.destination_site_id,
    via_site_id = EXCLUDED.via_site_id,
    origin_location_id = EXCLUDED.origin_location_id,
    destination_location_id = EXCLUDED.destination_location_id,
    method = EXCLUDED.method,
    settings = EXCLUDED.settings,
    active = EXCLUDED.active,
    updated_at = now()
WHERE (
    data_transfer_route.route_type, data_transfer_route.origin_site_id, data_transfer_route.destination_site_id,
    data_transfer_route.via_site_id, data_transfer_route.origin_location_id,
    data_transfer_route.destination_location_id, data_transfer_route.method, data_transfer_route.settings,
    data_transfer_route.active
) IS DISTINCT FROM (
    EXCLUDED.route_type, EXCLUDED.origin_site_id, EXCLUDED.destination_site_id, EXCLUDED.via_site_id,
    EXCLUDED.origin_location_id, EXCLUDED.destination_location_id, EXCLUDED.method, EXCLUDED.settings,
    EXCLUDED.active
)
RETURNING id, (xmax = 0) AS inserted;
