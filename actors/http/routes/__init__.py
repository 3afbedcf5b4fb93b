"""The HTTP API's routes, one module per part of the API."""
