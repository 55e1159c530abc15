"""The FastAPI model server: settings, routes, schemas, batching, inference backends, metrics."""
