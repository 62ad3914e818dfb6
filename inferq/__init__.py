"""inferq client-side tools: the local stack launcher (and, later, the client and CLI)."""
