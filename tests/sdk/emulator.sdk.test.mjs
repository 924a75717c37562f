// The official stripe-node SDK drives the emulator through a whole subscription, and its own
// Webhook.constructEvent verifies every delivery. Every answer and event is held against Stripe's
// schemas at the end (conformance.mjs).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Stripe from 'stripe';
import { startEmulator, startReceiver, waitFor } from './helpers.mjs';
import { report } from './conformance.mjs';

const SECRET = 'whsec_sdk_suite_secret';
let emu;
let receiver;

before(async () => {
  receiver = await startReceiver();
  emu = await startEmulator({ webhook: receiver.url, secret: SECRET });
});
after(() => { emu?.stop(); receiver?.close(); });


test('subscription through Checkout, read back through the SDK', async () => {
  const { stripe } = emu;
  const product = await stripe.products.create({ name: 'Team', metadata: { tier: 'team' } });
  const price = await stripe.prices.create({ product: product.id, unit_amount: 2500, currency: 'usd', recurring: { interval: 'month' }, lookup_key: 'team_monthly' });
  assert.equal(price.recurring.interval, 'month');
  const byKey = await stripe.prices.list({ lookup_keys: ['team_monthly'], expand: ['data.product'] });
  assert.equal(byKey.data.length, 1);
  assert.equal(byKey.data[0].product.name, 'Team');

  const customer = await stripe.customers.create({ email: 'sdk@example.com', metadata: { userId: 'user_sdk' } });
  assert.equal(customer.metadata.userId, 'user_sdk');

  const session = await stripe.checkout.sessions.create({
    mode: 'subscription',
    customer: customer.id,
    line_items: [{ price: price.id, quantity: 1 }],
    success_url: 'http://127.0.0.1:9/success?session_id={CHECKOUT_SESSION_ID}',
    cancel_url: 'http://127.0.0.1:9/',
    client_reference_id: 'user_sdk',
    subscription_data: { metadata: { userId: 'user_sdk' } },
  });
  assert.equal(session.status, 'open');
  assert.match(session.url, /\/c\/pay\/cs_test_/);

  const paid = await fetch(`${emu.url}/_emulator/checkout/sessions/${session.id}/complete`, {
    method: 'POST', body: new URLSearchParams({ card_number: '4242 4242 4242 4242' }), redirect: 'manual',
  });
  assert.equal(paid.status, 303);
  assert.equal(paid.headers.get('location'), `http://127.0.0.1:9/success?session_id=${session.id}`);

  const completed = await stripe.checkout.sessions.retrieve(session.id, { expand: ['subscription'] });
  assert.equal(completed.status, 'complete');
  assert.equal(completed.payment_status, 'paid');
  assert.equal(completed.subscription.status, 'active');

  const subs = await stripe.subscriptions.list({ customer: customer.id, status: 'all', limit: 1, expand: ['data.default_payment_method'] });
  assert.equal(subs.data.length, 1);
  const sub = subs.data[0];
  assert.equal(sub.status, 'active');
  assert.equal(sub.items.data[0].price.id, price.id);
  assert.equal(sub.metadata.userId, 'user_sdk');
  const item = sub.items.data[0];
  assert.ok(item.current_period_end > item.current_period_start, 'period end after start');
  assert.ok(item.current_period_end - item.current_period_start >= 28 * 86400);
  assert.equal(sub.default_payment_method.card.brand, 'visa');
  assert.equal(sub.default_payment_method.card.last4, '4242');

  const invoice = await stripe.invoices.retrieve(sub.latest_invoice);
  assert.equal(invoice.status, 'paid');
  assert.equal(invoice.amount_paid, 2500);
  assert.equal(invoice.parent.subscription_details.subscription, sub.id);
  const intents = await stripe.paymentIntents.list({ customer: customer.id });
  assert.equal(intents.data.length, 1);
  assert.equal(intents.data[0].status, 'succeeded');

  const updated = await stripe.subscriptions.update(sub.id, { cancel_at_period_end: true });
  assert.equal(updated.cancel_at_period_end, true);
  assert.equal(updated.cancel_at, item.current_period_end);

  const portal = await stripe.billingPortal.sessions.create({ customer: customer.id, return_url: 'http://127.0.0.1:9/dashboard' });
  assert.match(portal.url, /\/p\/session\/bps_/);

  const canceled = await stripe.subscriptions.cancel(sub.id);
  assert.equal(canceled.status, 'canceled');

  // Every event of the flow reaches the receiver, each verified by the SDK with the endpoint secret.
  const events = await stripe.events.list({ limit: 100 });
  const flowEvents = events.data.filter((e) => e.created >= customer.created && !e.type.startsWith('product.') && !e.type.startsWith('price.'));
  const receivedIds = () => new Set(receiver.received.map(({ body }) => JSON.parse(body).id));
  await waitFor(() => flowEvents.every((e) => receivedIds().has(e.id)), 'every event of the flow delivered');
  const verified = receiver.received.map(({ body, signature }) => stripe.webhooks.constructEvent(body, signature, SECRET));
  const types = verified.map((e) => e.type);
  for (const t of ['customer.subscription.created', 'invoice.created', 'invoice.finalized', 'invoice.paid', 'invoice.payment_succeeded', 'payment_intent.succeeded', 'checkout.session.completed', 'customer.subscription.updated', 'customer.subscription.deleted']) {
    assert.ok(types.includes(t), `delivered ${t}`);
  }
  // Within the Checkout payment, the order is Stripe's: subscription first, session completed last.
  assert.ok(types.indexOf('customer.subscription.created') < types.indexOf('invoice.paid'));
  assert.ok(types.indexOf('invoice.payment_succeeded') < types.indexOf('checkout.session.completed'));
  const completedEvent = verified.find((e) => e.type === 'checkout.session.completed');
  assert.equal(completedEvent.data.object.id, session.id);
  const deleted = verified.find((e) => e.type === 'customer.subscription.deleted');
  assert.equal(deleted.data.object.status, 'canceled');
  assert.equal(deleted.data.previous_attributes.status, 'active');

  // A tampered body or another secret fails the SDK's check.
  const { body, signature } = receiver.received[0];
  assert.throws(() => stripe.webhooks.constructEvent(body.replace('"livemode": false', '"livemode": true'), signature, SECRET), Stripe.errors.StripeSignatureVerificationError);
  assert.throws(() => stripe.webhooks.constructEvent(body, signature, 'whsec_other'), Stripe.errors.StripeSignatureVerificationError);

  const endpoint = await stripe.webhookEndpoints.create({ url: 'http://127.0.0.1:9/other', enabled_events: ['invoice.paid'] });
  assert.match(endpoint.secret, /^whsec_/);
});

test('SDK errors carry Stripe error types', async () => {
  const { stripe } = emu;
  await assert.rejects(stripe.customers.retrieve('cus_missing'), (err) => err instanceof Stripe.errors.StripeInvalidRequestError && err.code === 'resource_missing' && err.statusCode === 404);
  await assert.rejects(stripe.customers.create({ bogus: 'x' }), (err) => err.code === 'parameter_unknown' && err.param === 'bogus');
  const bad = new Stripe('sk_live_nope', { host: new URL(emu.url).hostname, port: Number(new URL(emu.url).port), protocol: 'http', maxNetworkRetries: 0 });
  await assert.rejects(bad.customers.list(), (err) => err instanceof Stripe.errors.StripeAuthenticationError);
  const customer = await stripe.customers.create({ email: 'declined@example.com' });
  await assert.rejects(stripe.paymentMethods.attach('pm_card_chargeDeclined', { customer: customer.id }), (err) => err instanceof Stripe.errors.StripeCardError && err.decline_code === 'generic_decline');
  const key = `idem-${Date.now()}`;
  const first = await stripe.customers.create({ email: 'same@example.com' }, { idempotencyKey: key });
  const again = await stripe.customers.create({ email: 'same@example.com' }, { idempotencyKey: key });
  assert.equal(again.id, first.id);
  await assert.rejects(stripe.customers.create({ email: 'other@example.com' }, { idempotencyKey: key }), (err) => err instanceof Stripe.errors.StripeIdempotencyError);
});

test('a trial with a directly created subscription', async () => {
  const { stripe } = emu;
  const customer = await stripe.customers.create({ email: 'trial@example.com', payment_method: 'pm_card_mastercard', invoice_settings: { default_payment_method: 'pm_card_mastercard' } });
  assert.match(customer.invoice_settings.default_payment_method, /^pm_/);
  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: 'price_pro_monthly' }], trial_period_days: 14, expand: ['latest_invoice', 'customer'] });
  assert.equal(sub.status, 'trialing');
  assert.equal(sub.trial_end - sub.trial_start, 14 * 86400);
  assert.equal(sub.latest_invoice.amount_due, 0);
  assert.equal(sub.customer.email, 'trial@example.com');
  const pms = await stripe.paymentMethods.list({ customer: customer.id, type: 'card' });
  assert.equal(pms.data[0].card.brand, 'mastercard');
});

test('test clocks, dunning, pause and resume through the SDK', async () => {
  const { stripe } = emu;
  const day = 86400;
  const start = Date.UTC(2025, 0, 31, 10) / 1000; // 31 January: renewals keep the anchor's day
  const clock = await stripe.testHelpers.testClocks.create({ frozen_time: start, name: 'sdk' });
  assert.equal(clock.status, 'ready');
  const advance = async (to) => {
    const advancing = await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: to });
    assert.equal(advancing.status, 'advancing');
    for (let i = 0; i < 200; i++) {
      const now = await stripe.testHelpers.testClocks.retrieve(clock.id);
      if (now.status === 'ready') { assert.equal(now.frozen_time, to); return; }
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.fail('the clock never became ready');
  };
  const listed = await stripe.testHelpers.testClocks.list({ limit: 100 });
  assert.ok(listed.data.some((c) => c.id === clock.id));

  const customer = await stripe.customers.create({
    email: 'dunning@example.com', test_clock: clock.id, payment_method: 'pm_card_visa',
    invoice_settings: { default_payment_method: 'pm_card_visa' }, metadata: { userId: 'user_dunning' },
  });
  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: 'price_pro_monthly' }], metadata: { userId: 'user_dunning' } });
  assert.equal(sub.status, 'active');
  assert.equal(sub.test_clock, clock.id);
  const failing = await stripe.paymentMethods.attach('pm_card_chargeCustomerFail', { customer: customer.id });
  await stripe.subscriptions.update(sub.id, { default_payment_method: failing.id });

  // The renewal (28 February, then 31 March from the anchor) fails, and is retried 3, 5 and 7 days apart.
  const feb28 = Date.UTC(2025, 1, 28, 10) / 1000;
  await advance(feb28 + 2 * 3600);
  let current = await stripe.subscriptions.retrieve(sub.id, { expand: ['latest_invoice'] });
  assert.equal(current.status, 'past_due');
  assert.equal(current.items.data[0].current_period_end, Date.UTC(2025, 2, 31, 10) / 1000);
  assert.equal(current.latest_invoice.attempt_count, 1);
  assert.equal(current.latest_invoice.next_payment_attempt, feb28 + 3600 + 3 * day);
  for (const [days, attempts] of [[3, 2], [8, 3], [15, 4]]) {
    await advance(feb28 + 3600 + days * day + 60);
    current = await stripe.subscriptions.retrieve(sub.id, { expand: ['latest_invoice'] });
    assert.equal(current.latest_invoice.attempt_count, attempts);
  }
  assert.equal(current.status, 'canceled', 'the default end state after the last retry');
  assert.equal(current.cancellation_details.reason, 'payment_failed');
  assert.equal(current.latest_invoice.next_payment_attempt, null);
  const failures = await stripe.events.list({ type: 'invoice.payment_failed', limit: 10 });
  assert.deepEqual(failures.data.map((e) => e.data.object.attempt_count), [4, 3, 2, 1]);

  // The read endpoints an app calls around it.
  const items = await stripe.subscriptionItems.list({ subscription: sub.id });
  assert.equal(items.data[0].price.id, 'price_pro_monthly');
  const lines = await stripe.invoices.listLineItems(current.latest_invoice.id);
  assert.equal(lines.data[0].amount, 1000);
  const payments = await stripe.invoicePayments.list({ invoice: current.latest_invoice.id });
  assert.equal(payments.data[0].status, 'open');
  const charges = await stripe.charges.list({ customer: customer.id, limit: 10 });
  assert.deepEqual(charges.data.map((c) => c.status), ['failed', 'failed', 'failed', 'failed', 'succeeded']);
  const invoice = await stripe.invoices.retrieve(current.latest_invoice.id, { expand: ['amount_paid_off_stripe'] });
  assert.equal(invoice.amount_paid_off_stripe, 0);
  const configurations = await stripe.billingPortal.configurations.list();
  assert.equal(configurations.data[0].is_default, true);

  // Search, as apps look a user up.
  const byUser = await stripe.customers.search({ query: "metadata['userId']:'user_dunning'" });
  assert.equal(byUser.object, 'search_result');
  assert.deepEqual(byUser.data.map((c) => c.id), [customer.id]);
  const canceled = await stripe.subscriptions.search({ query: "status:'canceled' AND metadata['userId']:'user_dunning'" }).autoPagingToArray({ limit: 10 });
  assert.deepEqual(canceled.map((s) => s.id), [sub.id]);
  await assert.rejects(stripe.customers.search({ query: "email:'a' AND name:'b' OR name:'c'" }), (err) => err instanceof Stripe.errors.StripeInvalidRequestError);

  // A trial that ends without a card pauses; resuming with one starts a paid period.
  const trial = await stripe.customers.create({ email: 'paused@example.com', test_clock: clock.id });
  const paused = await stripe.subscriptions.create({
    customer: trial.id, items: [{ price: 'price_pro_monthly' }], trial_period_days: 7,
    trial_settings: { end_behavior: { missing_payment_method: 'pause' } },
  });
  const now = (await stripe.testHelpers.testClocks.retrieve(clock.id)).frozen_time;
  await advance(now + 8 * day);
  assert.equal((await stripe.subscriptions.retrieve(paused.id)).status, 'paused');
  const card = await stripe.paymentMethods.attach('pm_card_visa', { customer: trial.id });
  await stripe.customers.update(trial.id, { invoice_settings: { default_payment_method: card.id } });
  const preview = await stripe.invoices.createPreview({ customer: trial.id, subscription: paused.id });
  assert.match(preview.id, /^upcoming_in/);
  // Resuming finalizes the invoice; the payment comes right after the request, and with it `active`.
  const resumed = await stripe.subscriptions.resume(paused.id, { expand: ['latest_invoice'] });
  assert.equal(resumed.latest_invoice.status, 'open');
  const active = await waitFor(async () => { const s = await stripe.subscriptions.retrieve(paused.id, { expand: ['latest_invoice'] }); return s.status === 'active' && s; }, 'active');
  assert.equal(active.latest_invoice.status, 'paid');
  const types = (await stripe.events.list({ type: 'customer.subscription.*', limit: 100 })).data.filter((e) => e.data.object.id === paused.id).map((e) => e.type);
  assert.ok(types.includes('customer.subscription.resumed') && types.includes('customer.subscription.paused'), types.join());

  const gone = await stripe.testHelpers.testClocks.del(clock.id);
  assert.equal(gone.deleted, true);
});

test('entitlements: features on products, a customer\'s active entitlements and their summary events', async () => {
  const { stripe } = emu;
  const exportFeature = await stripe.entitlements.features.create({ name: 'Export', lookup_key: 'sdk-export' });
  const sso = await stripe.entitlements.features.create({ name: 'SSO', lookup_key: 'sdk-sso', metadata: { tier: 'pro' } });
  await assert.rejects(stripe.entitlements.features.create({ name: 'Again', lookup_key: 'sdk-export' }), (e) => e.type === 'StripeInvalidRequestError');
  const basic = await stripe.products.create({ name: 'Basic' });
  const pro = await stripe.products.create({ name: 'Pro' });
  const basicPrice = await stripe.prices.create({ product: basic.id, unit_amount: 900, currency: 'usd', recurring: { interval: 'month' } });
  const proPrice = await stripe.prices.create({ product: pro.id, unit_amount: 2900, currency: 'usd', recurring: { interval: 'month' } });
  const attached = await stripe.products.createFeature(basic.id, { entitlement_feature: exportFeature.id });
  assert.equal(attached.entitlement_feature.lookup_key, 'sdk-export');
  await stripe.products.createFeature(pro.id, { entitlement_feature: exportFeature.id });
  const proSso = await stripe.products.createFeature(pro.id, { entitlement_feature: sso.id });
  assert.deepEqual((await stripe.products.listFeatures(pro.id)).data.map((f) => f.entitlement_feature.lookup_key).sort(), ['sdk-export', 'sdk-sso']);

  const customer = await stripe.customers.create({ email: 'features@example.com', payment_method: 'pm_card_visa', invoice_settings: { default_payment_method: 'pm_card_visa' } });
  const keys = async () => (await stripe.entitlements.activeEntitlements.list({ customer: customer.id })).data.map((e) => e.lookup_key).sort();
  assert.deepEqual(await keys(), []);
  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: basicPrice.id }] });
  assert.deepEqual(await keys(), ['sdk-export']);
  const [active] = (await stripe.entitlements.activeEntitlements.list({ customer: customer.id })).data;
  assert.equal((await stripe.entitlements.activeEntitlements.retrieve(active.id)).feature, exportFeature.id);

  // Upgrade: the same entitlement to export stays, sso is added.
  await stripe.subscriptions.update(sub.id, { items: [{ id: sub.items.data[0].id, price: proPrice.id }], proration_behavior: 'none' });
  const afterUpgrade = (await stripe.entitlements.activeEntitlements.list({ customer: customer.id })).data;
  assert.deepEqual(afterUpgrade.map((e) => e.lookup_key).sort(), ['sdk-export', 'sdk-sso']);
  assert.equal(afterUpgrade.find((e) => e.lookup_key === 'sdk-export').id, active.id);
  // Detached from the product, archived: gone; a cancelled subscription has none.
  await stripe.products.deleteFeature(pro.id, proSso.id);
  assert.deepEqual(await keys(), ['sdk-export']);
  await stripe.entitlements.features.update(exportFeature.id, { active: false });
  assert.deepEqual(await keys(), []);
  await stripe.entitlements.features.update(exportFeature.id, { active: true });
  assert.deepEqual(await keys(), ['sdk-export']);
  await stripe.subscriptions.cancel(sub.id);
  assert.deepEqual(await keys(), []);

  const summaries = (await stripe.events.list({ type: 'entitlements.active_entitlement_summary.updated', limit: 100 })).data
    .filter((e) => e.data.object.customer === customer.id).reverse();
  assert.deepEqual(summaries.map((e) => e.data.object.entitlements.data.map((x) => x.lookup_key).sort().join(',')),
    ['sdk-export', 'sdk-export,sdk-sso', 'sdk-export', '', 'sdk-export', '']);
  assert.deepEqual(summaries[1].data.previous_attributes.entitlements.data.map((x) => x.lookup_key), ['sdk-export']);
  await waitFor(() => receiver.received.some(({ body }) => JSON.parse(body).id === summaries[5].id), 'the last summary delivered');
});

test('coupons and promotion codes: a code entered at Checkout discounts the invoices while it lasts', async () => {
  const { stripe } = emu;
  const coupon = await stripe.coupons.create({ percent_off: 25, duration: 'repeating', duration_in_months: 3, name: 'Spring' });
  assert.equal(coupon.valid, true);
  await assert.rejects(stripe.coupons.create({ percent_off: 10, amount_off: 100, currency: 'usd' }), (e) => e.type === 'StripeInvalidRequestError');
  const code = await stripe.promotionCodes.create({ promotion: { type: 'coupon', coupon: coupon.id }, code: 'SPRING25' });
  assert.equal(code.promotion.coupon, coupon.id);
  const fiveOff = await stripe.coupons.create({ amount_off: 500, currency: 'usd', duration: 'once' });
  await stripe.promotionCodes.create({ promotion: { type: 'coupon', coupon: fiveOff.id }, code: 'FIVEOFF' });

  const product = await stripe.products.create({ name: 'Discounted' });
  const price = await stripe.prices.create({ product: product.id, unit_amount: 2000, currency: 'usd', recurring: { interval: 'month' } });
  const pay = async (code, allow = true) => {
    const customer = await stripe.customers.create({ email: `${code || 'none'}@example.com` });
    const session = await stripe.checkout.sessions.create({
      mode: 'subscription', customer: customer.id, line_items: [{ price: price.id, quantity: 1 }], allow_promotion_codes: allow,
      success_url: 'http://127.0.0.1:9/done', cancel_url: 'http://127.0.0.1:9/',
    });
    const paid = await fetch(`${emu.url}/_emulator/checkout/sessions/${session.id}/complete`, {
      method: 'POST', body: new URLSearchParams({ card_number: '4242424242424242', promotion_code: code }), redirect: 'manual',
    });
    return { session, paid, customer };
  };
  const invalid = await pay('NOSUCHCODE');
  assert.equal(invalid.paid.status, 400);
  assert.match((await invalid.paid.json()).error.message, /invalid/);
  assert.equal((await pay('SPRING25', false)).paid.status, 400, 'a session without the field takes no code');

  const { session, paid, customer } = await pay('spring25');
  assert.equal(paid.status, 303, 'codes match in any case');
  const completed = await stripe.checkout.sessions.retrieve(session.id);
  assert.deepEqual([completed.discounts[0].promotion_code, completed.total_details.amount_discount, completed.amount_total], [code.id, 500, 1500]);
  const [sub] = (await stripe.subscriptions.list({ customer: customer.id, expand: ['data.discounts.source.coupon', 'data.discounts.promotion_code'] })).data;
  const discount = sub.discounts[0];
  assert.equal(discount.source.coupon.percent_off, 25);
  assert.equal(discount.promotion_code.code, 'SPRING25');
  assert.ok(discount.end > discount.start + 88 * 86400 && discount.end < discount.start + 93 * 86400, 'three months');
  const invoice = await stripe.invoices.retrieve(sub.latest_invoice);
  assert.deepEqual([invoice.subtotal, invoice.total, invoice.amount_paid, invoice.total_discount_amounts[0].amount], [2000, 1500, 1500, 500]);
  assert.equal((await stripe.coupons.retrieve(coupon.id)).times_redeemed, 1);
  assert.equal((await stripe.promotionCodes.retrieve(code.id)).times_redeemed, 1);

  // A `once` coupon takes its amount off the first invoice, then leaves the subscription.
  const once = await pay('FIVEOFF');
  assert.equal(once.paid.status, 303);
  const [onceSub] = (await stripe.subscriptions.list({ customer: once.customer.id })).data;
  assert.deepEqual(onceSub.discounts, []);
  assert.equal((await stripe.invoices.retrieve(onceSub.latest_invoice)).total, 1500);
  const deleted = (await stripe.events.list({ type: 'customer.discount.deleted' })).data;
  assert.ok(deleted.some((e) => e.data.object.subscription === onceSub.id));
});

test('prorations: a previewed upgrade is invoiced now for exactly the preview; a failing card leaves the old price', async () => {
  const { stripe } = emu;
  const product = await stripe.products.create({ name: 'Tiers' });
  const basic = await stripe.prices.create({ product: product.id, unit_amount: 900, currency: 'usd', recurring: { interval: 'month' }, nickname: 'Basic' });
  const pro = await stripe.prices.create({ product: product.id, unit_amount: 2900, currency: 'usd', recurring: { interval: 'month' }, nickname: 'Pro' });
  const customer = await stripe.customers.create({ email: 'upgrade@example.com', payment_method: 'pm_card_visa', invoice_settings: { default_payment_method: 'pm_card_visa' } });
  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: basic.id }] });
  const item = sub.items.data[0];
  const at = item.current_period_start;
  const change = { items: [{ id: item.id, price: pro.id }], proration_behavior: 'always_invoice', proration_date: at };
  const preview = await stripe.invoices.createPreview({ subscription: sub.id, subscription_details: change });
  assert.deepEqual(preview.lines.data.map((l) => [l.amount, l.parent.subscription_item_details.proration]), [[-900, true], [2900, true]]);
  assert.equal(preview.amount_due, 2000);
  const upgraded = await stripe.subscriptions.update(sub.id, change);
  assert.equal(upgraded.items.data[0].price.id, pro.id);
  const invoice = await stripe.invoices.retrieve(upgraded.latest_invoice);
  assert.deepEqual([invoice.billing_reason, invoice.status, invoice.amount_paid], ['subscription_update', 'paid', preview.amount_due]);
  await assert.rejects(stripe.subscriptions.update(sub.id, { ...change, proration_date: at + 90 * 86400 }), (e) => e.param === 'proration_date');

  // Back down without prorations, then a card that fails: pending_if_incomplete keeps the old price.
  await stripe.subscriptions.update(sub.id, { items: [{ id: item.id, price: basic.id }], proration_behavior: 'none' });
  const failing = await stripe.paymentMethods.attach('pm_card_chargeCustomerFail', { customer: customer.id });
  await stripe.subscriptions.update(sub.id, { default_payment_method: failing.id });
  await assert.rejects(stripe.subscriptions.update(sub.id, { ...change, payment_behavior: 'error_if_incomplete' }), (e) => e.type === 'StripeCardError');
  const waiting = await stripe.subscriptions.update(sub.id, { ...change, payment_behavior: 'pending_if_incomplete' });
  assert.equal(waiting.items.data[0].price.id, basic.id, 'the old price stays');
  assert.equal(waiting.pending_update.subscription_items[0].price.id, pro.id);
  assert.equal((await stripe.invoices.retrieve(waiting.latest_invoice)).status, 'open');

  // create_prorations (the default): nothing is charged now; the next invoice carries them.
  const other = await stripe.customers.create({ email: 'later@example.com', payment_method: 'pm_card_visa', invoice_settings: { default_payment_method: 'pm_card_visa' } });
  const later = await stripe.subscriptions.create({ customer: other.id, items: [{ price: basic.id }] });
  const changed = await stripe.subscriptions.update(later.id, { items: [{ id: later.items.data[0].id, price: pro.id }], proration_date: later.items.data[0].current_period_start });
  assert.equal(changed.latest_invoice, later.latest_invoice, 'no invoice now');
  const next = await stripe.invoices.createPreview({ subscription: later.id });
  assert.deepEqual(next.lines.data.map((l) => l.amount).sort((a, b) => a - b), [-900, 2900, 2900]);
  assert.equal(next.amount_due, 4900);
  const items = await fetch(`${emu.url}/v1/events?type=invoiceitem.created`, { headers: { authorization: 'Bearer sk_test_sdk_suite' } }).then((r) => r.json());
});

test('seats: Checkout for three, then quantity changes prorated on the next invoice, at once, or not at all', async () => {
  const { stripe } = emu;
  const product = await stripe.products.create({ name: 'Per seat' });
  const seat = await stripe.prices.create({ product: product.id, unit_amount: 2500, currency: 'usd', recurring: { interval: 'month' }, metadata: { tollgate_seats: 'per_seat' } });
  const customer = await stripe.customers.create({ email: 'team@example.com', metadata: { orgId: 'org_sdk' } });
  const session = await stripe.checkout.sessions.create({
    mode: 'subscription', customer: customer.id, line_items: [{ price: seat.id, quantity: 3 }],
    success_url: 'http://127.0.0.1:9/success', cancel_url: 'http://127.0.0.1:9/',
  });
  assert.equal(session.amount_total, 7500);
  const lines = await stripe.checkout.sessions.listLineItems(session.id);
  assert.deepEqual(lines.data.map((l) => [l.quantity, l.amount_total]), [[3, 7500]]);
  const paid = await fetch(`${emu.url}/_emulator/checkout/sessions/${session.id}/complete`, {
    method: 'POST', body: new URLSearchParams({ card_number: '4242424242424242' }), redirect: 'manual',
  });
  assert.equal(paid.status, 303);
  const { subscription: subId } = await stripe.checkout.sessions.retrieve(session.id);
  let sub = await stripe.subscriptions.retrieve(subId);
  const item = sub.items.data[0];
  assert.equal(item.quantity, 3);
  assert.equal((await stripe.invoices.retrieve(sub.latest_invoice)).amount_paid, 7500);
  const at = item.current_period_start;

  // Five seats, previewed: two more for the whole period, exactly what the preview says.
  const toFive = { items: [{ id: item.id, quantity: 5 }], proration_behavior: 'always_invoice', proration_date: at };
  const preview = await stripe.invoices.createPreview({ subscription: sub.id, subscription_details: toFive });
  assert.deepEqual(preview.lines.data.map((l) => [l.quantity, l.amount]), [[3, -7500], [5, 12500]]);
  assert.equal(preview.amount_due, 5000);
  sub = await stripe.subscriptions.update(sub.id, toFive);
  assert.equal(sub.items.data[0].quantity, 5);
  const now = await stripe.invoices.retrieve(sub.latest_invoice);
  assert.deepEqual([now.billing_reason, now.status, now.amount_paid], ['subscription_update', 'paid', 5000]);

  // Four seats with create_prorations: proration invoice items wait for the next invoice.
  sub = await stripe.subscriptions.update(sub.id, { items: [{ id: item.id, quantity: 4 }], proration_date: at });
  assert.equal(sub.latest_invoice, now.id, 'nothing invoiced now');
  const pending = await stripe.invoiceItems.list({ customer: customer.id, pending: true });
  assert.deepEqual(pending.data.map((i) => [i.proration, i.quantity, i.amount]).sort((a, b) => a[2] - b[2]), [[true, 5, -12500], [true, 4, 10000]]);
  const next = await stripe.invoices.createPreview({ subscription: sub.id });
  assert.equal(next.amount_due, 4 * 2500 - 2500, 'the next period\'s four seats, less the seat given back');

  // Three seats without prorations: the quantity changes, nothing is billed for it.
  sub = await stripe.subscriptions.update(sub.id, { items: [{ id: item.id, quantity: 3 }], proration_behavior: 'none' });
  assert.equal(sub.items.data[0].quantity, 3);
  assert.equal((await stripe.invoiceItems.list({ customer: customer.id, pending: true })).data.length, 2, 'no new items');
  await assert.rejects(stripe.subscriptions.update(sub.id, { items: [{ id: item.id, quantity: 0 }] }), (e) => e.param === 'items[0][quantity]');
});

test('billing meters: events counted once per identifier, summed into summaries by minute, hour and day', async () => {
  const { stripe } = emu;
  const meter = await stripe.billing.meters.create({
    display_name: 'API requests', event_name: 'api_requests', default_aggregation: { formula: 'sum' },
  });
  assert.deepEqual([meter.status, meter.customer_mapping.event_payload_key, meter.value_settings.event_payload_key], ['active', 'stripe_customer_id', 'value']);
  await assert.rejects(
    stripe.billing.meters.create({ display_name: 'Again', event_name: 'api_requests', default_aggregation: { formula: 'count' } }),
    (e) => e.code === 'resource_already_exists',
  );
  const counter = await stripe.billing.meters.create({ display_name: 'Calls', event_name: 'api_calls', default_aggregation: { formula: 'count' } });
  const customer = await stripe.customers.create({ email: 'metered@example.com' });
  const hour = Math.floor(Date.now() / 1000 / 3600) * 3600 - 3600;
  const send = (identifier, value, timestamp, event_name = 'api_requests') =>
    stripe.billing.meterEvents.create({ event_name, identifier, timestamp, payload: { stripe_customer_id: customer.id, value: String(value) } });
  const first = await send('acme:minute:1', 1530, hour + 60);
  assert.deepEqual([first.identifier, first.payload.value, first.timestamp], ['acme:minute:1', '1530', hour + 60]);
  await send('acme:minute:2', 470, hour + 120);
  await send('acme:next-hour', 1000, hour + 3600 + 5);
  await assert.rejects(send('acme:minute:1', 1530, hour + 60), (e) => e.param === 'identifier', 'an identifier counts once');
  await assert.rejects(send('too-old', 1, hour - 40 * 86400), (e) => e.param === 'timestamp');
  await send('calls:1', 1, hour + 60, 'api_calls');
  await send('calls:2', 1, hour + 61, 'api_calls');

  const total = await stripe.billing.meters.listEventSummaries(meter.id, { customer: customer.id, start_time: hour, end_time: hour + 7200 });
  assert.deepEqual(total.data.map((s) => [s.aggregated_value, s.start_time, s.end_time]), [[3000, hour, hour + 7200]]);
  const hourly = await stripe.billing.meters.listEventSummaries(meter.id, { customer: customer.id, start_time: hour, end_time: hour + 7200, value_grouping_window: 'hour' });
  assert.deepEqual(hourly.data.map((s) => s.aggregated_value), [1000, 2000], 'newest window first');
  const calls = await stripe.billing.meters.listEventSummaries(counter.id, { customer: customer.id, start_time: hour, end_time: hour + 3600 });
  assert.equal(calls.data[0].aggregated_value, 2);
  await assert.rejects(stripe.billing.meters.listEventSummaries(meter.id, { customer: customer.id, start_time: hour + 1, end_time: hour + 3600 }), (e) => e.param === 'start_time');

  const renamed = await stripe.billing.meters.update(meter.id, { display_name: 'Tokens' });
  assert.equal(renamed.display_name, 'Tokens');
  const off = await stripe.billing.meters.deactivate(meter.id);
  assert.equal(off.status, 'inactive');
  assert.ok(off.status_transitions.deactivated_at > 0);
  assert.deepEqual((await stripe.billing.meters.list({ status: 'active' })).data.map((m) => m.id), [counter.id]);
  const on = await stripe.billing.meters.reactivate(meter.id);
  assert.deepEqual([on.status, on.status_transitions.deactivated_at], ['active', null]);
  assert.equal((await stripe.billing.meters.retrieve(meter.id)).display_name, 'Tokens');
});

test('the v2 meter event stream: a session token, batches of events, async validation, expiry', async () => {
  const { stripe } = emu;
  const meter = await stripe.billing.meters.create({ display_name: 'Streamed', event_name: 'streamed_calls', default_aggregation: { formula: 'sum' } });
  const customer = await stripe.customers.create({ email: 'stream@example.com' });
  const session = await stripe.v2.billing.meterEventSession.create();
  assert.equal(session.object, 'v2.billing.meter_event_session');
  assert.equal(Date.parse(session.expires_at) - Date.parse(session.created), 15 * 60 * 1000, 'a token is good for 15 minutes');
  const { hostname, port } = new URL(emu.url);
  const streamer = new Stripe(session.authentication_token, { host: hostname, port: Number(port), protocol: 'http', maxNetworkRetries: 0 });
  const minute = Math.floor(Date.now() / 60000) * 60;
  const event = (identifier, value) => ({
    event_name: 'streamed_calls', identifier, timestamp: new Date(minute * 1000).toISOString(),
    payload: { stripe_customer_id: customer.id, value: String(value) },
  });
  const answer = await streamer.v2.billing.meterEventStream.create({ events: [event('s:1', 40), event('s:2', 2)] });
  assert.deepEqual({ ...answer, lastResponse: undefined }, { lastResponse: undefined }, 'the stream answers {}');
  // A repeated identifier is accepted and dropped (Stripe validates the stream's events later).
  await streamer.v2.billing.meterEventStream.create({ events: [event('s:1', 40)] });
  await assert.rejects(
    streamer.v2.billing.meterEventStream.create({ events: [{ event_name: 'streamed_calls', payload: { value: 1 } }] }),
    (e) => e.statusCode === 400 && /payload/.test(e.message),
  );
  await assert.rejects(stripe.v2.billing.meterEventStream.create({ events: [event('s:3', 1)] }), (e) => e.statusCode === 401, 'the secret key is not a session token');
  const summed = await stripe.billing.meters.listEventSummaries(meter.id, { customer: customer.id, start_time: minute - 60, end_time: minute + 120 });
  assert.equal(summed.data[0].aggregated_value, 42);

  const moved = await fetch(`${emu.url}/_emulator/clock/advance`, { method: 'POST', body: new URLSearchParams({ seconds: String(16 * 60) }) });
  assert.equal(moved.status, 200);
  await assert.rejects(
    streamer.v2.billing.meterEventStream.create({ events: [event('s:4', 1)] }),
    (e) => e instanceof Stripe.errors.TemporarySessionExpiredError && e.code === 'billing_meter_event_session_expired',
  );
});

test('a metered price bills the period\'s usage in arrears, beside a licensed price billed ahead', async () => {
  const { stripe } = emu;
  const product = await stripe.products.create({ name: 'API' });
  const meter = await stripe.billing.meters.create({ display_name: 'Tokens', event_name: 'tokens_used', default_aggregation: { formula: 'sum' } });
  await assert.rejects(
    stripe.prices.create({ product: product.id, currency: 'usd', unit_amount: 2, recurring: { interval: 'month', usage_type: 'metered' } }),
    (e) => e.param === 'recurring[meter]',
    'a metered price needs its meter',
  );
  const perToken = await stripe.prices.create({ product: product.id, currency: 'usd', unit_amount: 2, recurring: { interval: 'month', usage_type: 'metered', meter: meter.id } });
  assert.equal(perToken.recurring.meter, meter.id);
  const base = await stripe.prices.create({ product: product.id, currency: 'usd', unit_amount: 1000, recurring: { interval: 'month' } });
  const now = Math.floor(Date.now() / 1000);
  const clock = await stripe.testHelpers.testClocks.create({ frozen_time: now, name: 'metered' });
  const customer = await stripe.customers.create({
    email: 'tokens@example.com', test_clock: clock.id, payment_method: 'pm_card_visa', invoice_settings: { default_payment_method: 'pm_card_visa' },
  });
  await assert.rejects(
    stripe.subscriptions.create({ customer: customer.id, items: [{ price: perToken.id, quantity: 3 }] }),
    (e) => e.param === 'items[0][quantity]',
  );
  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: base.id }, { price: perToken.id }] });
  const metered = sub.items.data.find((i) => i.price.id === perToken.id);
  assert.equal(metered.quantity, undefined, 'a metered item has no quantity');
  const first = await stripe.invoices.retrieve(sub.latest_invoice);
  assert.equal(first.amount_paid, 1000, 'the first invoice: the base ahead, no usage yet');

  for (const [identifier, value] of [['t:1', 1500], ['t:2', 500]]) {
    await stripe.billing.meterEvents.create({ event_name: 'tokens_used', identifier, timestamp: now + 60, payload: { stripe_customer_id: customer.id, value: String(value) } });
  }
  const upcoming = await stripe.invoices.createPreview({ subscription: sub.id });
  assert.equal(upcoming.amount_due, 1000 + 2 * 2000, 'the preview counts the usage so far');

  const end = metered.current_period_end;
  await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: end + 3700 });
  for (let i = 0; i < 200 && (await stripe.testHelpers.testClocks.retrieve(clock.id)).status !== 'ready'; i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  const renewed = await stripe.subscriptions.retrieve(sub.id);
  const invoice = await stripe.invoices.retrieve(renewed.latest_invoice);
  assert.deepEqual([invoice.billing_reason, invoice.status, invoice.amount_paid], ['subscription_cycle', 'paid', 1000 + 2 * 2000]);
  const usageLine = invoice.lines.data.find((l) => l.pricing.price_details.price === perToken.id);
  assert.deepEqual([usageLine.quantity, usageLine.amount, usageLine.period.start, usageLine.period.end], [2000, 4000, metered.current_period_start, end]);
  const baseLine = invoice.lines.data.find((l) => l.pricing.price_details.price === base.id);
  assert.equal(baseLine.period.start, end, 'the base is billed for the period ahead');
});

test('Checkout with a usage price beside the plan: no quantity, nothing charged for it up front', async () => {
  const { stripe } = emu;
  const product = await stripe.products.create({ name: 'API plan' });
  const meter = await stripe.billing.meters.create({ display_name: 'Calls', event_name: 'checkout_calls', default_aggregation: { formula: 'sum' } });
  const plan = await stripe.prices.create({ product: product.id, currency: 'usd', unit_amount: 1900, recurring: { interval: 'month' } });
  const perCall = await stripe.prices.create({ product: product.id, currency: 'usd', unit_amount: 1, recurring: { interval: 'month', usage_type: 'metered', meter: meter.id } });
  const customer = await stripe.customers.create({ email: 'api-plan@example.com' });
  const urls = { success_url: 'http://127.0.0.1:9/success', cancel_url: 'http://127.0.0.1:9/' };
  await assert.rejects(
    stripe.checkout.sessions.create({ mode: 'subscription', customer: customer.id, line_items: [{ price: plan.id, quantity: 1 }, { price: perCall.id, quantity: 1 }], ...urls }),
    (e) => e.param === 'line_items[1][quantity]',
    'a usage price takes no quantity',
  );
  const session = await stripe.checkout.sessions.create({ mode: 'subscription', customer: customer.id, line_items: [{ price: plan.id, quantity: 1 }, { price: perCall.id }], ...urls });
  assert.equal(session.amount_total, 1900, 'usage is billed in arrears');
  const lines = await stripe.checkout.sessions.listLineItems(session.id);
  assert.deepEqual(lines.data.map((l) => [l.price.id, l.quantity, l.amount_total]), [[plan.id, 1, 1900], [perCall.id, null, 0]]);
  const page = await fetch(session.url).then((r) => r.text());
  assert.match(page, /\(usage\)/, 'the hosted page says which line is usage');
  const paid = await fetch(`${emu.url}/_emulator/checkout/sessions/${session.id}/complete`, {
    method: 'POST', body: new URLSearchParams({ card_number: '4242424242424242' }), redirect: 'manual',
  });
  assert.equal(paid.status, 303);
  const { subscription } = await stripe.checkout.sessions.retrieve(session.id);
  const sub = await stripe.subscriptions.retrieve(subscription);
  assert.deepEqual(sub.items.data.map((i) => [i.price.id, i.quantity]), [[plan.id, 1], [perCall.id, undefined]]);
  assert.equal((await stripe.invoices.retrieve(sub.latest_invoice)).amount_paid, 1900);
});

test('subscription schedules: a downgrade at the period\'s end, then the schedule releases the subscription', async () => {
  const { stripe } = emu;
  const start = Date.UTC(2025, 2, 10, 12) / 1000;
  const clock = await stripe.testHelpers.testClocks.create({ frozen_time: start });
  const advance = async (to) => {
    await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: to });
    for (let i = 0; i < 200 && (await stripe.testHelpers.testClocks.retrieve(clock.id)).status !== 'ready'; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  const product = await stripe.products.create({ name: 'Scheduled' });
  const pro = await stripe.prices.create({ product: product.id, unit_amount: 2900, currency: 'usd', recurring: { interval: 'month' } });
  const basic = await stripe.prices.create({ product: product.id, unit_amount: 900, currency: 'usd', recurring: { interval: 'month' } });
  const customer = await stripe.customers.create({ email: 'downgrade@example.com', test_clock: clock.id, payment_method: 'pm_card_visa', invoice_settings: { default_payment_method: 'pm_card_visa' } });
  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: pro.id }] });
  const periodEnd = sub.items.data[0].current_period_end;
  const schedule = await stripe.subscriptionSchedules.create({ from_subscription: sub.id });
  assert.deepEqual([schedule.status, schedule.phases.length, schedule.phases[0].end_date], ['active', 1, periodEnd]);
  assert.equal((await stripe.subscriptions.retrieve(sub.id)).schedule, schedule.id);
  await assert.rejects(stripe.subscriptionSchedules.create({ from_subscription: sub.id }), (e) => e.type === 'StripeInvalidRequestError');
  const updated = await stripe.subscriptionSchedules.update(schedule.id, {
    end_behavior: 'release',
    phases: [
      { items: [{ price: pro.id }], start_date: schedule.phases[0].start_date, end_date: periodEnd },
      { items: [{ price: basic.id }] },
    ],
  });
  assert.equal(updated.phases[1].start_date, periodEnd);
  const expanded = await stripe.subscriptions.retrieve(sub.id, { expand: ['schedule'] });
  assert.equal(expanded.schedule.phases[1].items[0].price, basic.id);

  await advance(periodEnd + 2 * 3600);
  const renewed = await stripe.subscriptions.retrieve(sub.id);
  assert.equal(renewed.items.data[0].price.id, basic.id, 'the next phase\'s price from its start');
  assert.equal((await stripe.invoices.retrieve(renewed.latest_invoice)).amount_due, 900);
  assert.equal((await stripe.subscriptionSchedules.retrieve(schedule.id)).current_phase.start_date, periodEnd);

  await advance(renewed.items.data[0].current_period_end + 2 * 3600);
  const released = await stripe.subscriptionSchedules.retrieve(schedule.id);
  assert.deepEqual([released.status, released.released_subscription], ['released', sub.id]);
  const after = await stripe.subscriptions.retrieve(sub.id);
  assert.deepEqual([after.schedule, after.items.data[0].price.id, after.status], [null, basic.id, 'active']);
  // Events list newest `created` first: those at the clock's (past) time come after today's.
  const types = (await stripe.events.list({ type: 'subscription_schedule.*', limit: 100 })).data.filter((e) => e.data.object.id === schedule.id).map((e) => e.type);
  for (const t of ['subscription_schedule.created', 'subscription_schedule.updated', 'subscription_schedule.released']) {
    assert.ok(types.includes(t), t);
  }
});

test('every answer and event of this suite matches Stripe\'s schemas (stripe-node\'s types)', async () => {
  const { answers, events, violations } = await emu.conformance();
  assert.ok(answers > 100 && events > 100, `checked ${answers} answers and ${events} events`);
  assert.equal(violations.length, 0, report(violations));
});
