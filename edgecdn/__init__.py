"""edgecdn: a CDN edge cache server."""

__version__ = "0.1.0"
