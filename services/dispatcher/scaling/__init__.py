"""Autoscaling by queue depth: a policy (pure), backends that start and stop workers, and the loop
that applies one to the other each second."""
