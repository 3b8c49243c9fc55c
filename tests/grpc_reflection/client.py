"""A Python gRPC client that knows erp-connect only through gRPC reflection.

No generated stubs and no .proto files: grpcio-reflection (which speaks
grpc.reflection.v1alpha) fetches the descriptors, a DescriptorPool builds the
message classes, and each call is made by its full method name. This is how
a team without our protos, or a GUI client, discovers and calls the APIs.

    client.py --process HOST:PORT [--system HOST:PORT]

A service token for the process tier, if it needs one, comes from the
ERP_CONNECT_SERVICE_TOKEN environment variable (not argv, which others can
read). Prints one JSON object on stdout; any failure ends with an exception
and a non-zero exit.
"""

import argparse
import json
import os
import sys
import uuid

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

TIMEOUT = 30  # seconds; a bound for a hung server, not a performance check


class Reflected:
    """A channel with its reflection-backed descriptor pool."""

    def __init__(self, address, metadata=()):
        self.channel = grpc.insecure_channel(address)
        self.database = ProtoReflectionDescriptorDatabase(self.channel)
        self.pool = DescriptorPool(self.database)
        self.metadata = tuple(metadata)

    def services(self):
        return sorted(self.database.get_services())

    def call(self, service, method, request):
        """Calls service/method with `request` (a dict in proto3 JSON form)."""
        descriptor = self.pool.FindServiceByName(service).FindMethodByName(method)
        request_class = message_factory.GetMessageClass(descriptor.input_type)
        response_class = message_factory.GetMessageClass(descriptor.output_type)
        stub = self.channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        message = json_format.ParseDict(request, request_class())
        response = stub(message, metadata=self.metadata, timeout=TIMEOUT)
        return json_format.MessageToDict(response, preserving_proto_field_name=True)

    def close(self):
        self.channel.close()


def process_tier(address, token):
    metadata = [("authorization", f"Bearer {token}")] if token else []
    tier = Reflected(address, metadata)
    try:
        services = tier.services()
        catalog = tier.call(
            "catalog.v1.CatalogService", "ListCatalogItems", {"page_size": 2}
        )
        sku = catalog["items"][0]["sku"]
        o2c = "order_to_cash.v1.OrderToCashService"
        customer = f"web:python-{uuid.uuid4().hex[:12]}"
        placed = tier.call(
            o2c,
            "PlaceOrder",
            {
                "idempotency_key": str(uuid.uuid4()),
                "tenant": "web",
                "customer": {
                    "external_id": customer,
                    "email": "python@example.com",
                    "name": "Python Reflection",
                },
                "external_ref": "PY-REFLECTION-1",
                "lines": [{"sku": sku, "quantity": "1"}],
                "card_token": "tok_visa",
            },
        )
        fetched = tier.call(
            o2c, "GetOrder", {"tenant": "web", "order_id": placed["id"]}
        )
        listed = tier.call(
            o2c,
            "ListOrders",
            {"tenant": "web", "customer_external_id": customer, "page_size": 10},
        )
        return {
            "services": services,
            "catalog": catalog,
            "placed": placed,
            "fetched": fetched,
            "listed": listed.get("orders", []),
        }
    finally:
        tier.close()


def system_tier(address):
    tier = Reflected(address)
    try:
        services = tier.services()
        # Descriptors resolved by reflection alone: the method's input type.
        method = tier.pool.FindServiceByName("erp.v1.ProductService").methods[0]
        return {
            "services": services,
            "product_service_method": method.name,
            "input_type": method.input_type.full_name,
        }
    finally:
        tier.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--process", required=True, help="HOST:PORT of the process APIs")
    parser.add_argument("--system", help="HOST:PORT of the system APIs")
    args = parser.parse_args()
    token = os.environ.get("ERP_CONNECT_SERVICE_TOKEN", "")
    result = {"process": process_tier(args.process, token)}
    if args.system:
        result["system"] = system_tier(args.system)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
