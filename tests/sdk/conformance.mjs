// Conformance of the emulator's answers to Stripe's published schemas, as stripe-node's type
// definitions carry them: generated from Stripe's OpenAPI spec, pinned (with its integrity hash)
// by package-lock.json, the versions in `REFERENCE` below. No package registry reachable here
// carries the spec itself for this API version; the SDK's types are its faithful, pinned copy.
//
// The emulator records every `/v1` answer (`--record-responses FILE`); a suite ends by handing
// that file and the emulator's URL to `checkRecording`, which also reads every event the
// emulator made. Each 2xx body (each object of a list) and every event, with its `data.object`,
// becomes a typed declaration `const x: Closed<Stripe.<Type>> = <json>` that `tsc --strict`
// checks: a missing required field, a null where the schema has none, an unknown field, a wrong
// type, a value outside an enum or an object kind with no type all fail. (stripe-node leaves its
// enums open with `| OtherString` so old SDKs accept new values; `Closed` takes that member off
// again, to hold the emulator to the values the spec lists.)
//
// Run by hand: node tests/sdk/conformance.mjs RECORDING.jsonl [EMULATOR_URL]
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));

// The schemas' provenance: the stripe-node release whose types are the reference, and the
// OpenAPI spec version it was generated from (API version 2026-10-28.endive, the emulator's).
// Moving to another release is a deliberate change of both lines.
export const REFERENCE = { stripeNode: '23.1.0', openapi: 'v2596' };

function checkReference() {
  const installed = JSON.parse(fs.readFileSync(path.join(here, 'node_modules', 'stripe', 'package.json'), 'utf8')).version;
  const openapi = fs.readFileSync(path.join(here, 'node_modules', 'stripe', 'OPENAPI_VERSION'), 'utf8').trim();
  if (installed !== REFERENCE.stripeNode || openapi !== REFERENCE.openapi) {
    throw new Error(`the schemas are stripe-node ${REFERENCE.stripeNode} (OpenAPI ${REFERENCE.openapi}); installed: ${installed} (${openapi})`);
  }
}

// `object` → the type in the Stripe namespace. A kind missing here is a violation of its own.
const TYPES = {
  'billing.meter': 'Billing.Meter',
  'billing.meter_event': 'Billing.MeterEvent',
  'billing.meter_event_summary': 'Billing.MeterEventSummary',
  'v2.billing.meter_event_session': 'V2.Billing.MeterEventSession',
  'billing_portal.configuration': 'BillingPortal.Configuration',
  'billing_portal.session': 'BillingPortal.Session',
  charge: 'Charge',
  'checkout.session': 'Checkout.Session',
  coupon: 'Coupon',
  customer: 'Customer',
  discount: 'Discount',
  'entitlements.active_entitlement': 'Entitlements.ActiveEntitlement',
  'entitlements.active_entitlement_summary': 'Entitlements.ActiveEntitlementSummary',
  'entitlements.feature': 'Entitlements.Feature',
  event: 'Event',
  invoice: 'Invoice',
  invoice_payment: 'InvoicePayment',
  invoiceitem: 'InvoiceItem',
  item: 'LineItem',
  line_item: 'InvoiceLineItem',
  payment_intent: 'PaymentIntent',
  payment_method: 'PaymentMethod',
  plan: 'Plan',
  price: 'Price',
  product: 'Product',
  product_feature: 'ProductFeature',
  promotion_code: 'PromotionCode',
  subscription: 'Subscription',
  subscription_item: 'SubscriptionItem',
  subscription_schedule: 'SubscriptionSchedule',
  'test_helpers.test_clock': 'TestHelpers.TestClock',
  webhook_endpoint: 'WebhookEndpoint',
};

// The deleted form `{id, object, deleted: true}` of a kind, where Stripe has one.
function deletedType(type) {
  const dot = type.lastIndexOf('.');
  return dot < 0 ? `Deleted${type}` : `${type.slice(0, dot + 1)}Deleted${type.slice(dot + 1)}`;
}

// `Closed<T>`: T with every open enum closed, all the way down. Stripe's spec has no `id` on the
// invoice of `invoice.upcoming` (stripe-node's Invoice requires one).
const PRELUDE = `import Stripe from 'stripe';
declare function D(s: string): ReturnType<typeof Stripe.Decimal.from>;
type Literals<U> = U extends unknown ? (string extends U ? never : U) : never;
type ClosedString<S> = [S] extends [never] ? never : [Literals<S>] extends [never] ? S : Literals<S>;
type Closed<T> = ClosedString<Extract<T, string>> | ClosedMember<Exclude<T, string>>;
type ClosedMember<T> = T extends (infer E)[] ? Closed<E>[] : T extends object ? { [K in keyof T]: Closed<T[K]> } : T;
type UpcomingInvoice = Omit<Stripe.Invoice, 'id'> & { id?: string };
type UpcomingInvoiceEvent = Omit<Stripe.InvoiceUpcomingEvent, 'data'> & { data: { object: UpcomingInvoice } };
`;

/** The typed objects of one answer body: `[{type, value}]`, or `{problem}` for what has no type. */
export function typedObjects(body) {
  if (body === null || typeof body !== 'object') return [];
  if (body.object === 'list' || body.object === 'search_result') return (body.data || []).flatMap(typedObjects);
  const type = TYPES[body.object];
  // The v2 meter event stream answers `{}` (stripe-node's `EmptyObject`): nothing to check.
  if (body.object === undefined && Object.keys(body).length === 0) return [];
  if (!type) return [{ problem: `no stripe-node type for object "${body.object}"`, value: body }];
  if (body.deleted === true) return [{ type: deletedType(type), value: body }];
  if (body.object === 'event' && body.type === 'invoice.upcoming') return [{ type: 'UpcomingInvoiceEvent', value: body, raw: true }];
  return [{ type, value: body }];
}

/** Violations of `entries` ({where, body}) as `{where, type, message}`; empty when all conform. */
export async function check(entries) {
  checkReference();
  const violations = [];
  const seen = new Set();
  const lines = PRELUDE.split('\n');
  const spans = []; // [first line, last line, where, type], 1-based
  for (const { where, body } of entries) {
    for (const typed of typedObjects(body)) {
      if (typed.problem) {
        violations.push({ where, type: '-', message: typed.problem });
        continue;
      }
      const literal = JSON.stringify(typed.value, null, 1)
        // Decimal fields are strings on the wire and a branded type in the SDK.
        .replace(/"([a-z_]*_decimal)": ("[^"]*")/g, '"$1": D($2)');
      // Identical objects need one check: ids and times aside, most answers repeat a few shapes.
      const key = `${typed.type}:${literal.replace(/"(?:[a-z]+_[A-Za-z0-9_]+)"|\d+/g, '_')}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const text = `export const v${spans.length}: Closed<${typed.raw ? '' : 'Stripe.'}${typed.type}> = ${literal};`.split('\n');
      spans.push([lines.length + 1, lines.length + text.length, where, typed.type]);
      lines.push(...text);
    }
  }
  if (spans.length === 0) return violations;
  const dir = fs.mkdtempSync(path.join(here, '.conformance-'));
  const file = path.join(dir, 'answers.ts');
  fs.writeFileSync(file, lines.join('\n'));
  const tsc = path.join(here, 'node_modules', '.bin', 'tsc');
  const args = ['--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--skipLibCheck', '--pretty', 'false', file];
  let output = '';
  try {
    await promisify(execFile)(tsc, args, { cwd: here, maxBuffer: 64 * 1024 * 1024 });
  } catch (err) {
    output = `${err.stdout || ''}${err.stderr || ''}`;
    if (!output.includes('error TS')) throw err;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  for (const block of output.split(/\n(?=\S)/)) {
    const m = block.match(/\((\d+),\d+\): error (TS\d+: [\s\S]*)/);
    if (!m) continue;
    const line = Number(m[1]);
    const span = spans.find(([first, last]) => line >= first && line <= last);
    violations.push({
      where: span ? span[2] : `line ${line}`,
      type: span ? span[3] : '?',
      message: `${m[2].trim()}\n    at: ${(lines[line - 1] || '').trim()}`,
    });
  }
  return violations;
}

/** Every event the emulator at `url` holds, newest first. */
export async function allEvents(url) {
  const events = [];
  let after = null;
  for (;;) {
    const query = new URLSearchParams({ limit: '100', ...(after ? { starting_after: after } : {}) });
    const res = await fetch(`${url}/v1/events?${query}`, { headers: { authorization: 'Bearer sk_test_conformance' } });
    const page = await res.json();
    events.push(...page.data);
    if (!page.has_more) return events;
    after = page.data[page.data.length - 1].id;
  }
}

/** The violations of a recording (every 2xx answer in it) and of every event at `url`. */
export async function checkRecording(file, url) {
  const entries = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line))
    .filter((r) => r.status >= 200 && r.status < 300)
    .map((r) => ({ where: `${r.method} ${r.path}`, body: r.body }));
  const events = url ? await allEvents(url) : [];
  entries.push(...events.map((e) => ({ where: `event ${e.id} (${e.type})`, body: e })));
  return { answers: entries.length - events.length, events: events.length, violations: await check(entries) };
}

/** Violations as a readable report. */
export function report(violations) {
  return violations.map((v) => `${v.where} as ${v.type}: ${v.message}`).join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [file, url] = process.argv.slice(2);
  if (!file) {
    console.error('usage: node tests/sdk/conformance.mjs RECORDING.jsonl [EMULATOR_URL]');
    process.exit(2);
  }
  const { answers, events, violations } = await checkRecording(file, url);
  console.log(`${answers} answers and ${events} events checked: ${violations.length} violations`);
  if (violations.length) {
    console.log(report(violations));
    process.exit(1);
  }
}
