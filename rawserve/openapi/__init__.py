"""OpenAPI for a rawserve app, as FastAPI writes it: ``utils.get_openapi``
builds the document from the routes, ``docs`` serves Swagger UI and ReDoc.

Schemas come from pydantic's JSON schema when pydantic is installed (what
FastAPI uses, so the documents agree), and from ``schemas.PlainSchemas``,
rawserve's own, when it is not.
"""
