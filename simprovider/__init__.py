"""A simulated Anthropic Messages API server for tests, demos and load (DESIGN §4.5)."""
