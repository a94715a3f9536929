"""Pure computation: paired statistics between configurations, out-of-fold pooling."""
