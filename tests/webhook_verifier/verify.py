"""Checks webhook deliveries with a verifier nobody here wrote.

Reads JSON on stdin: {"secrets": {name: "whsec_..."}, "deliveries":
[{"headers": {...}, "body": "..."}], "asyncapi": {...}}. For each delivery it
prints which secrets verify its signature (the `standardwebhooks` package,
the Standard Webhooks reference implementation) and whether its body
matches the AsyncAPI document's schema for its type (`jsonschema`).
"""

import json
import sys

import jsonschema
from standardwebhooks import Webhook, WebhookVerificationError

request = json.load(sys.stdin)
doc = request["asyncapi"]
results = []
for delivery in request["deliveries"]:
    verified_by = []
    for name, secret in request["secrets"].items():
        try:
            Webhook(secret).verify(delivery["body"], delivery["headers"])
            verified_by.append(name)
        except WebhookVerificationError:
            pass
    body = json.loads(delivery["body"])
    key = body.get("type", "").replace(".", "_") + "_webhook"
    schema_errors = []
    if key not in doc["components"]["messages"]:
        schema_errors.append(f"no message {key} in the AsyncAPI document")
    else:
        root = dict(doc)
        root["$ref"] = f"#/components/messages/{key}/payload"
        validator = jsonschema.Draft202012Validator(root)
        schema_errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
    results.append({"verified_by": verified_by, "schema_errors": schema_errors})
json.dump(results, sys.stdout)
