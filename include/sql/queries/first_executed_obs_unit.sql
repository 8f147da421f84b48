SELECT min(id) FROM executed_obs_unit;
