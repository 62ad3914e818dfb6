"""Dispatcher: an arq worker process that routes requests to model streams and collects results."""
