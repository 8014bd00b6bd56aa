"""The tenant REST API (``/api/v1/``): a thin HTTP layer over the apps' services and selectors.

Built on django-ninja (typed Pydantic schemas, an OpenAPI 3.1 document generated from the same
types that validate requests, a vendored Swagger UI that needs no CDN). It lives in the top
layer (``voiceplatform``) because it serves agents, sessions, usage and invoices together.
"""
