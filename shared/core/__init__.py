"""What every process needs and that touches no Redis: errors, ids, states, settings, logs, tasks, backoff, pages."""
