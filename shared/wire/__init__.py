"""The contracts between processes and clients: API bodies, stream messages, CloudEvents."""
