"""ledex.engine."""
