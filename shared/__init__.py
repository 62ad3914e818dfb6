"""Code every inferq service shares: schemas, settings, Redis key names, stream and job-store helpers."""
