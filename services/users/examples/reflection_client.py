"""A generic gRPC client that knows no Portico code: everything comes from server reflection.

    cd services/users/examples
    python reflection_client.py 127.0.0.1:50051 list
    python reflection_client.py 127.0.0.1:50051 describe portico.users.v1.UserService
    PORTICO_TOKEN=<access token> python reflection_client.py 127.0.0.1:50051 \
        call portico.users.v1.UserService/CreateUser \
        '{"email": "ada@example.com", "display_name": "Ada"}'

Requests and responses are proto JSON. ``call`` sends ``authorization: Bearer <token>`` metadata
when ``--token`` (or ``PORTICO_TOKEN``) is given: Portico's RPCs need an access token, health and
reflection do not. A failed call prints the status code and message to
stderr and exits 1. grpcurl does the same job: ``grpcurl -plaintext 127.0.0.1:50051 list``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="host:port of a gRPC server with reflection")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the services")
    describe = sub.add_parser("describe", help="list a service's methods")
    describe.add_argument("service")
    call = sub.add_parser("call", help="call a unary method with a JSON request")
    call.add_argument("method", help="package.Service/Method")
    call.add_argument("request", nargs="?", default="{}", help="request as proto JSON")
    call.add_argument("--timeout", type=float, default=5.0)
    call.add_argument(
        "--token",
        default=os.environ.get("PORTICO_TOKEN", ""),
        help="access token (default: $PORTICO_TOKEN)",
    )
    args = parser.parse_args()

    with grpc.insecure_channel(args.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        if args.command == "list":
            for name in database.get_services():
                print(name)
            return 0
        if args.command == "describe":
            service = pool.FindServiceByName(args.service)
            for method in service.methods:
                arg, result = method.input_type.full_name, method.output_type.full_name
                print(f"rpc {method.name}({arg}) returns ({result})")
            return 0
        service_name, _, method_name = args.method.partition("/")
        method = pool.FindServiceByName(service_name).methods_by_name[method_name]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        request = json_format.Parse(args.request, request_class())
        stub = channel.unary_unary(
            f"/{service_name}/{method_name}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        try:
            metadata = (("authorization", f"Bearer {args.token}"),) if args.token else ()
            response = stub(request, timeout=args.timeout, metadata=metadata)
        except grpc.RpcError as exc:
            print(f"{exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        body = json_format.MessageToDict(response, preserving_proto_field_name=True)
        print(json.dumps(body, indent=2))
        return 0


if __name__ == "__main__":
    sys.exit(main())
