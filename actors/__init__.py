"""Ray actors: thin shells that hold state, route messages and call the pure core and storage."""
