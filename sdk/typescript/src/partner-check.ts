// A partner's round trip through the TypeScript client generated from
// erp-connect's OpenAPI document: what a partner's SDK would do, run
// against a live `erp-connect up` by .ci/sdk-check.sh.
//
//   ERP_CONNECT_URL=http://127.0.0.1:8080 ERP_CONNECT_OPS_TOKEN=... node build/partner-check.js
//
// An operator creates the partner's API key (POST /ops/v1/keys), then the
// partner lists products, places an order with an Idempotency-Key, places
// it again with the same key (the same order comes back) and with the same
// key and another body (422), and reads the order back by id and in its
// list. Any answer other than the one expected exits 1, naming the call.

import createClient, { type Client } from "openapi-fetch";

import type { components, paths } from "./generated/erp-connect.js";

type Order = components["schemas"]["OrderView"];
type Problem = components["schemas"]["Problem"];

const baseUrl = required("ERP_CONNECT_URL");
const opsToken = required("ERP_CONNECT_OPS_TOKEN");

function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    console.error(`partner-check: set ${name}`);
    process.exit(2);
  }
  return value;
}

class Unexpected extends Error {}

// The answer of one call: what it was, and whether it was the one expected.
function expect(call: string, ok: boolean, response: Response, body: unknown): void {
  if (!ok) {
    throw new Unexpected(`${call}: unexpected answer ${response.status}: ${JSON.stringify(body)}`);
  }
  console.log(`  ok  ${call} -> ${response.status}`);
}

function isProblem(body: unknown): body is Problem {
  return typeof body === "object" && body !== null && "type" in body && "status" in body;
}

async function main(): Promise<void> {
  const ops = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${opsToken}` } });

  // The operator: a key for a partner tenant of this run's own.
  const partner = `sdk-check-${Date.now().toString(36)}`;
  const created = await ops.POST("/ops/v1/keys", {
    body: { partner, scopes: ["catalog:read", "orders:read", "orders:write"], plan: "silver" },
  });
  expect(
    `POST /ops/v1/keys (partner ${partner})`,
    created.response.status === 201 && created.data !== undefined && created.data.key.startsWith("erpk_"),
    created.response,
    created.data ?? created.error,
  );
  const key = created.data!.key;

  // The partner, with that key only.
  const api = createClient<paths>({ baseUrl, headers: { "X-API-Key": key } });

  const products = await api.GET("/partner/v1/products", { params: { query: { page_size: 100 } } });
  const inStock = products.data?.products.find((p) => p.availability.available >= 2);
  expect(
    "GET /partner/v1/products",
    products.response.status === 200 && inStock !== undefined,
    products.response,
    products.data ?? products.error,
  );
  const sku = inStock!.sku;

  const idempotencyKey = `${partner}-order-1`;
  const order = {
    lines: [{ sku, quantity: 2 }],
    payment: { method: "on_account" as const },
    external_ref: `PO-${partner}`,
  };
  const placed = await api.POST("/partner/v1/orders", {
    params: { header: { "Idempotency-Key": idempotencyKey } },
    body: order,
  });
  const first: Order | undefined = placed.data;
  expect(
    `POST /partner/v1/orders (${sku} x 2, Idempotency-Key ${idempotencyKey})`,
    placed.response.status === 201 &&
      first !== undefined &&
      first.id.startsWith("ord_") &&
      first.status === "accepted" &&
      first.lines.length === 1 &&
      first.lines[0]?.sku === sku &&
      first.lines[0]?.quantity === 2 &&
      first.external_ref === order.external_ref,
    placed.response,
    placed.data ?? placed.error,
  );
  const id = first!.id;

  const replayed = await api.POST("/partner/v1/orders", {
    params: { header: { "Idempotency-Key": idempotencyKey } },
    body: order,
  });
  expect(
    "POST /partner/v1/orders again, same key and body: the same order",
    replayed.response.status === 201 && replayed.data?.id === id,
    replayed.response,
    replayed.data ?? replayed.error,
  );

  const conflicting = await api.POST("/partner/v1/orders", {
    params: { header: { "Idempotency-Key": idempotencyKey } },
    body: { ...order, lines: [{ sku, quantity: 1 }] },
  });
  expect(
    "POST /partner/v1/orders again, same key, another body: 422 problem",
    conflicting.response.status === 422 && isProblem(conflicting.error),
    conflicting.response,
    conflicting.data ?? conflicting.error,
  );

  const read = await api.GET("/partner/v1/orders/{id}", { params: { path: { id } } });
  const statuses = ["accepted", "confirmed", "invoiced", "paid", "shipped", "completed"];
  expect(
    `GET /partner/v1/orders/${id}`,
    read.response.status === 200 &&
      read.data?.id === id &&
      statuses.includes(read.data.status) &&
      read.data.total === first!.total &&
      read.data.currency === first!.currency,
    read.response,
    read.data ?? read.error,
  );

  const listed = await api.GET("/partner/v1/orders", { params: { query: { page_size: 10 } } });
  expect(
    "GET /partner/v1/orders: the order is the tenant's only one",
    listed.response.status === 200 && listed.data?.orders.length === 1 && listed.data.orders[0]?.id === id,
    listed.response,
    listed.data ?? listed.error,
  );

  const missing = await api.GET("/partner/v1/orders/{id}", { params: { path: { id: "ord_00000000000000000000000000" } } });
  expect(
    "GET /partner/v1/orders/<unknown>: 404 problem",
    missing.response.status === 404 && isProblem(missing.error),
    missing.response,
    missing.data ?? missing.error,
  );

  console.log(`partner-check: passed (order ${id}, ${first!.total} ${first!.currency})`);
}

// Never called: tsc proves that the generated types are the contract's and
// not `any`, since each of these calls must be refused at compile time.
export function refusedAtCompileTime(api: Client<paths>): void {
  // @ts-expect-error: no such path in the contract.
  void api.GET("/partner/v1/no-such-path");
  // @ts-expect-error: a quantity is an integer, not a string.
  void api.POST("/partner/v1/orders", { body: { lines: [{ sku: "X", quantity: "2" }], payment: { method: "on_account" } } });
  // @ts-expect-error: an order is paid somehow: `payment` is required.
  void api.POST("/partner/v1/orders", { body: { lines: [{ sku: "X", quantity: 2 }] } });
}

main().catch((e: unknown) => {
  console.error(`partner-check: FAILED: ${e instanceof Unexpected ? e.message : e instanceof Error ? e.stack : String(e)}`);
  process.exit(1);
});
