"""The HTTP API and the report pages (DESIGN §4.7): a thin shell over driver.api, served by Ray Serve."""
