"""The driver: the Python API and the `launch.py` command line."""
