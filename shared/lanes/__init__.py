"""A request's trip through its model's lane streams: publish or hand back, takeover of dead consumers, dead letters."""
