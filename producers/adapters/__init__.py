"""Framework adapters: each framework's own tracing recorded as agentlog events (optional extras)."""
