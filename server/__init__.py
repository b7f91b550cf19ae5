"""ledex.server."""
