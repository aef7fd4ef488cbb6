"""Portico's audit service: consumes the event stream ``portico:events:v1`` into PostgreSQL
(each event once) and serves ``portico.audit.v1.AuditService`` over grpc.aio.
``server.start``/``server.serve`` are the entry points."""
