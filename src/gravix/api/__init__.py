"""API: the query HTTP API, users, sessions and tokens."""
