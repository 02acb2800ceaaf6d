"""citadel API gateway: JWT auth, GCRA rate limits, load balancing, cache, metrics."""

from importlib.metadata import PackageNotFoundError, version

try:  # one place holds the version: pyproject.toml (a release bumps it there)
    __version__ = version("citadel-gateway")
except PackageNotFoundError:  # run from the source tree without an install (tests)
    __version__ = "0+source"
