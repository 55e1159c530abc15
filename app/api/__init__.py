"""The HTTP face of the server: dependencies, routes (v1, v2, ops, explanations, web page;
thin: parse → handler → respond), the request handlers per model kind (:mod:`.handlers`:
decode, choose the path once, predict, encode), the payload decoders they use
(:mod:`.image_inputs`, :mod:`.molecules`, :mod:`.tensor_inputs`, :mod:`.body_decoding`),
request / response schemas, middleware, OpenAPI document and documentation pages.
May import :mod:`app.serving`, :mod:`app.engine` and :mod:`app.core`."""
