"""citadel API gateway: JWT auth, GCRA rate limits, load balancing, cache, metrics."""

__version__ = "0.1.0"
