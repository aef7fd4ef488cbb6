"""The local stack launcher (``portico-dev``, ``make run``).

gRPC's fork handlers are switched off here, before anything imports grpc. The launcher checks its
children's health over gRPC and starts the next child with a ``preexec_fn``, and a ``preexec_fn``
makes CPython ``fork()`` instead of ``vfork()``. grpc's ``pthread_atfork`` handler then stops
gRPC's own threads before the fork. That handler was seen deadlocking the launcher, which hung
in ``fork()`` between the auth and audit services. The handlers exist for a child that goes on
using gRPC without ``exec``. Every child here calls ``exec`` at once, and gRPC documents
``GRPC_ENABLE_FORK_SUPPORT=false`` for that case. An explicit setting in the environment wins.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
