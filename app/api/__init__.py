"""The HTTP face of the server: dependencies, routes (v1, v2, ops, explanations, web page),
request / response schemas, body decoding, middleware, OpenAPI document and documentation pages.
May import :mod:`app.serving`, :mod:`app.engine` and :mod:`app.core`."""
