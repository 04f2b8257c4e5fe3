"""The driver: the Python API a user calls (`driver.api.CJClient`), the decision record's formats, and bringing
up what a batch needs (Ray, the database, the local stack). The command line over it is `cli/`."""
