"""Portico's auth service: ``portico.auth.v1.AuthService`` over grpc.aio (credentials in PostgreSQL,
sessions and throttling in Valkey). ``server.start``/``server.serve`` are the entry points."""
