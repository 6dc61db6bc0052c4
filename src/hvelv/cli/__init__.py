"""The `hvelv` command line: local administration and a client of the REST API."""
