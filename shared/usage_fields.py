"""Job-hash fields of what a job's requests cost (`Keys.job`), written by the collector's script.

Totals are plain fields; per serving model (the model that ran the requests, which may differ from
the model they named when they moved along a fallback chain) they are `model_field(model, name)`
fields. The per-model request counts (`m:<model>:succeeded`...) stay keyed by the model a request
named; these never share a name with them. Amounts are integers, so sums are exact.
"""

from __future__ import annotations


class UsageField:
    BUSY_US = "busy_us"  # worker busy time charged, µs (total, and per serving model)
    COST_MICROS = "cost_micros"  # cost, micro-dollars (total, and per serving model)
    SERVED = "served"  # per serving model only: requests it ran
