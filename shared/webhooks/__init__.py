"""Webhook endpoints and deliveries: records, the store, the URL guard, the fan-out of events to deliveries."""
