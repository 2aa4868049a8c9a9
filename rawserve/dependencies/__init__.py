"""The dependency graph of a handler: ``models`` (what it is), ``utils`` (building
it from a signature) and ``solving`` (binding it per request)."""
