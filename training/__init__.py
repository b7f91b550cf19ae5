"""ledex.training."""
