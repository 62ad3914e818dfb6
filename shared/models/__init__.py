"""Live model state read from Redis: health, flow (where its requests are), throughput stats, start phases."""
