"""edgecdn: a CDN edge cache server."""
