"""`python launch.py COMMAND …` (DESIGN §4.3): the parser, the commands and what they print. A shell over the
client (`driver/`), the HTTP layer (`web/`) and the benchmarks (`benches/`)."""
