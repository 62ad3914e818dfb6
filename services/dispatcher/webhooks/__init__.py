"""Webhook delivery in the dispatcher: the fan-out loop, due attempts, the HTTP client and the backlog gauge."""
