"""Operating the processes: Prometheus metrics and the ops server that serves them with health."""
