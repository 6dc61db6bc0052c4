"""The HTTP edge: request context, action-declaring routes, errors, middleware."""
