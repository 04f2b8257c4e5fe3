"""The benchmarks and the load test behind `launch.py bench …` and `launch.py loadtest` (docs/benchmarks.md),
apart from the client a user calls (`driver/`)."""
