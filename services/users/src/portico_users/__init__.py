"""Portico's users service: ``portico.users.v1.UserService`` over grpc.aio, on PostgreSQL, with a
Valkey read-through cache. ``server.start``/``server.serve`` are the entry points."""
