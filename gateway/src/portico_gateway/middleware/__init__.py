"""The gateway's ASGI middleware, one module each (pure ASGI: no BaseHTTPMiddleware, which costs
a task and a copy per request).

Outermost first, as ``app.create_app`` stacks them: ``request_id`` → ``access_log`` →
``security_headers`` (and CORS) → ``body_limit`` → ``authentication`` → ``rate_limit`` →
``idempotency`` → the routes. ``asgi`` holds the raw-ASGI helpers they share.
"""
