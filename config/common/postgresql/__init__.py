"""Django's PostgreSQL backend with Engram's connection pool (base.py says why)."""
