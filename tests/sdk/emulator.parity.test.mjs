// Where the emulator once differed from Stripe, each as stripe-node sees it (the emulator's third
// edition): code that passes here must not fail against Stripe for these reasons. The suite ends
// by holding every answer and event of its emulator against Stripe's schemas.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Stripe from 'stripe';
import { startEmulator, waitFor } from './helpers.mjs';
import { check, report } from './conformance.mjs';

const day = 86400;
let emu;
let stripe;

before(async () => {
  emu = await startEmulator();
  stripe = emu.stripe;
});
after(() => emu?.stop());

/** A customer whose default card is `card` (a test payment method id), optionally under `clock`. */
async function customerWith(card, clock) {
  return stripe.customers.create({
    email: 'parity@example.com', payment_method: card, invoice_settings: { default_payment_method: card }, ...(clock ? { test_clock: clock } : {}),
  });
}

/** A test clock at `start`, a customer paying with pm_card_visa under it, and a monthly subscription. */
async function clockedSubscription(start) {
  const clock = (await stripe.testHelpers.testClocks.create({ frozen_time: start })).id;
  const customer = await customerWith('pm_card_visa', clock);
  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: 'price_pro_monthly' }] });
  return { clock, customer, sub };
}

/** Advance `clock` and wait for `ready`, as code against Stripe must. */
async function advance(clock, to) {
  await stripe.testHelpers.testClocks.advance(clock, { frozen_time: to });
  await waitFor(async () => (await stripe.testHelpers.testClocks.retrieve(clock)).status === 'ready', 'the clock ready');
}

/** The events of one object, oldest first. */
async function eventsOf(objectId, type) {
  const events = await stripe.events.list({ limit: 100, ...(type ? { type } : {}) }).autoPagingToArray({ limit: 2000 });
  const about = (o) => [o.id, o.customer, o.subscription, o.parent?.subscription_details?.subscription].includes(objectId);
  return events.filter((e) => about(e.data.object)).reverse();
}

const setAdvanceTime = (milliseconds) =>
  fetch(`${emu.url}/_emulator/test_clocks/advance_time`, { method: 'POST', body: new URLSearchParams({ milliseconds: String(milliseconds) }) });
const setOutcome = (pm, outcome) => fetch(`${emu.url}/_emulator/payment_methods/${pm}/outcome`, { method: 'POST', body: new URLSearchParams({ outcome }) });

test('1. error_if_incomplete charges the customer\'s default card: a decline is a 402 and creates nothing', async () => {
  const customer = await customerWith('pm_card_chargeCustomerFail');
  await assert.rejects(
    stripe.subscriptions.create({ customer: customer.id, items: [{ price: 'price_pro_monthly' }], payment_behavior: 'error_if_incomplete' }),
    (err) => err instanceof Stripe.errors.StripeCardError && err.statusCode === 402,
  );
  assert.deepEqual((await stripe.subscriptions.list({ customer: customer.id, status: 'all' })).data, []);
  assert.deepEqual((await stripe.invoices.list({ customer: customer.id })).data, []);
  const paying = await customerWith('pm_card_visa');
  const sub = await stripe.subscriptions.create({ customer: paying.id, items: [{ price: 'price_pro_monthly' }], payment_behavior: 'error_if_incomplete' });
  assert.equal(sub.status, 'active', 'a good default card pays');
});

test('2. Checkout creates the subscription incomplete; its first payment makes it active', async () => {
  const customer = await stripe.customers.create({ email: 'checkout-parity@example.com' });
  const session = await stripe.checkout.sessions.create({
    mode: 'subscription', customer: customer.id, line_items: [{ price: 'price_pro_monthly', quantity: 1 }],
    success_url: 'http://127.0.0.1:9/ok', cancel_url: 'http://127.0.0.1:9/',
  });
  const paid = await fetch(`${emu.url}/_emulator/checkout/sessions/${session.id}/complete`, {
    method: 'POST', body: new URLSearchParams({ card_number: '4242424242424242' }), redirect: 'manual',
  });
  assert.equal(paid.status, 303);
  const sub = (await stripe.checkout.sessions.retrieve(session.id)).subscription;
  const events = await eventsOf(customer.id);
  const types = events.map((e) => e.type);
  const lifecycle = events.filter((e) => e.type.startsWith('customer.subscription.') && e.data.object.id === sub);
  assert.deepEqual(lifecycle.map((e) => [e.type, e.data.object.status]), [['customer.subscription.created', 'incomplete'], ['customer.subscription.updated', 'active']]);
  assert.equal(lifecycle[1].data.previous_attributes.status, 'incomplete');
  assert.ok(types.indexOf('invoice.paid') < types.lastIndexOf('customer.subscription.updated'), `the payment comes first: ${types}`);
  assert.ok(types.lastIndexOf('customer.subscription.updated') < types.indexOf('checkout.session.completed'), types.join());
});

test('3. a card error leaves out last_payment_error.doc_url and .param (optional, never null)', async () => {
  const customer = await customerWith('pm_card_chargeCustomerFail');
  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: 'price_pro_monthly' }], expand: ['latest_invoice'] });
  assert.equal(sub.status, 'incomplete');
  const [payment] = (await stripe.invoicePayments.list({ invoice: sub.latest_invoice.id })).data;
  const intent = await stripe.paymentIntents.retrieve(payment.payment.payment_intent);
  assert.equal(intent.last_payment_error.decline_code, 'generic_decline');
  for (const field of ['doc_url', 'param']) {
    assert.ok(!(field in intent.last_payment_error), `${field} absent from the payment intent`);
  }
  const [failed] = await eventsOf(intent.id, 'payment_intent.payment_failed');
  assert.ok(!('doc_url' in failed.data.object.last_payment_error) && !('param' in failed.data.object.last_payment_error));
});

test('4. hard declines are not retried on the same card; invoice.updated, invoice.upcoming and payment_intent.canceled fire', async () => {
  const start = Date.UTC(2025, 4, 1, 10) / 1000;
  const { clock, customer, sub } = await clockedSubscription(start);
  const renewal = sub.items.data[0].current_period_end;

  // invoice.upcoming comes 7 days (the default) before the renewal, with the next invoice, which has no id.
  await advance(clock, renewal - 7 * day - 60);
  assert.deepEqual(await eventsOf(sub.id, 'invoice.upcoming'), []);
  await advance(clock, renewal - 7 * day + 60);
  const [upcoming] = await eventsOf(sub.id, 'invoice.upcoming');
  assert.equal(upcoming.data.object.id, undefined);
  assert.deepEqual([upcoming.data.object.amount_due, upcoming.data.object.period_start], [1000, renewal]);
  assert.equal(upcoming.data.object.parent.subscription_details.subscription, sub.id);

  // The saved card is reported lost: the renewal fails, and the retries pass without a charge.
  const card = customer.invoice_settings.default_payment_method;
  assert.equal((await setOutcome(card, 'lost_card')).status, 200);
  await advance(clock, renewal + 3600 + 60);
  let invoice = (await stripe.subscriptions.retrieve(sub.id, { expand: ['latest_invoice'] })).latest_invoice;
  assert.equal(invoice.attempt_count, 1);
  const updated = (await eventsOf(invoice.id, 'invoice.updated')).at(-1);
  assert.deepEqual([updated.data.object.attempt_count, updated.data.previous_attributes.attempt_count], [1, 0]);
  const charges = async () => (await stripe.charges.list({ customer: customer.id, limit: 100 })).data.map((c) => c.failure_code ?? 'paid');
  assert.deepEqual(await charges(), ['card_declined', 'paid']);
  await advance(clock, invoice.next_payment_attempt + 60);
  invoice = await stripe.invoices.retrieve(invoice.id);
  assert.equal(invoice.attempt_count, 2, 'the retry counts');
  assert.ok(invoice.next_payment_attempt > 0, 'and the next stays scheduled');
  assert.deepEqual(await charges(), ['card_declined', 'paid'], 'no charge on the lost card');
  const intentId = invoice.payments.data[0].payment.payment_intent;
  assert.equal((await eventsOf(intentId, 'payment_intent.payment_failed')).length, 1);

  // A new card: the next retry charges it.
  const fresh = await stripe.paymentMethods.attach('pm_card_visa', { customer: customer.id });
  await stripe.customers.update(customer.id, { invoice_settings: { default_payment_method: fresh.id } });
  await advance(clock, invoice.next_payment_attempt + 60);
  assert.equal((await stripe.invoices.retrieve(invoice.id)).status, 'paid');
  assert.equal((await stripe.subscriptions.retrieve(sub.id)).status, 'active');
  assert.deepEqual(await charges(), ['paid', 'card_declined', 'paid']);

  // authentication_required is a hard decline too: one requires_action, no second try on that card.
  const auth = await customerWith('pm_card_authenticationRequired', clock);
  const authSub = await stripe.subscriptions.create({ customer: auth.id, items: [{ price: 'price_pro_monthly' }], payment_behavior: 'allow_incomplete' });
  await advance(clock, authSub.items.data[0].current_period_end + 3600 + 60);
  let authInvoice = (await stripe.subscriptions.retrieve(authSub.id, { expand: ['latest_invoice'] })).latest_invoice;
  await advance(clock, authInvoice.next_payment_attempt + 60);
  authInvoice = await stripe.invoices.retrieve(authInvoice.id);
  assert.equal(authInvoice.attempt_count, 2);
  assert.equal((await eventsOf(authInvoice.payments.data[0].payment.payment_intent, 'payment_intent.requires_action')).length, 1);

  // An incomplete subscription expires after 23 hours: its invoice is voided, and its payment intent canceled.
  const failing = await customerWith('pm_card_chargeCustomerFail', clock);
  const incomplete = await stripe.subscriptions.create({ customer: failing.id, items: [{ price: 'price_pro_monthly' }], expand: ['latest_invoice'] });
  const now = (await stripe.testHelpers.testClocks.retrieve(clock)).frozen_time;
  await advance(clock, now + 24 * 3600);
  assert.equal((await stripe.subscriptions.retrieve(incomplete.id)).status, 'incomplete_expired');
  const voided = await stripe.invoices.retrieve(incomplete.latest_invoice.id);
  assert.equal(voided.status, 'void');
  assert.equal(voided.payments.data[0].status, 'canceled');
  const canceled = await stripe.paymentIntents.retrieve(voided.payments.data[0].payment.payment_intent);
  assert.deepEqual([canceled.status, canceled.cancellation_reason], ['canceled', 'void_invoice']);
  const order = (await eventsOf(failing.id)).map((e) => e.type).filter((t) => ['invoice.voided', 'payment_intent.canceled', 'customer.subscription.deleted'].includes(t));
  assert.deepEqual(order, ['invoice.voided', 'payment_intent.canceled', 'customer.subscription.deleted']);
});

test('5. a test clock advance takes time: a second one is refused until ready, and events carry the right times', async () => {
  const start = Date.UTC(2025, 5, 1, 10) / 1000;
  const { clock, customer, sub } = await clockedSubscription(start);
  const periodEnd = sub.items.data[0].current_period_end;
  // A floor of 2 s (the default is 200 ms) leaves a loaded machine time for the checks below.
  assert.equal((await setAdvanceTime(2000)).status, 200);
  const advancing = await stripe.testHelpers.testClocks.advance(clock, { frozen_time: periodEnd + 2 * 3600 });
  assert.equal(advancing.status, 'advancing');
  await assert.rejects(stripe.testHelpers.testClocks.advance(clock, { frozen_time: periodEnd + 3 * 3600 }), (err) => err instanceof Stripe.errors.StripeInvalidRequestError);
  // Code that does not wait for `ready` sees the old state, as it would with Stripe.
  assert.equal((await stripe.subscriptions.retrieve(sub.id)).items.data[0].current_period_end, periodEnd);
  await waitFor(async () => (await stripe.testHelpers.testClocks.retrieve(clock)).status === 'ready', 'ready');
  assert.ok((await stripe.subscriptions.retrieve(sub.id)).items.data[0].current_period_end > periodEnd, 'renewed once ready');

  const wall = Math.floor(Date.now() / 1000);
  const clockEvents = await eventsOf(clock);
  for (const e of clockEvents) assert.ok(Math.abs(e.created - wall) < 120, `${e.type} at the wall time, not the frozen one`);
  assert.deepEqual([...new Set(clockEvents.map((e) => e.type))].sort(), ['test_helpers.test_clock.advancing', 'test_helpers.test_clock.created', 'test_helpers.test_clock.ready']);
  const customerEvents = await eventsOf(customer.id);
  for (const type of ['payment_method.attached', 'customer.updated']) {
    const event = customerEvents.find((e) => e.type === type);
    assert.equal(event.created, start, `${type} of a clock customer at the clock's time`);
  }
  // The list is newest `created` first, whatever order the events were made in.
  const listed = (await stripe.events.list({ limit: 100 })).data.map((e) => e.created);
  assert.deepEqual(listed, [...listed].sort((a, b) => b - a));

  // Instant mode, for fast tests: set, an advance still answers `advancing`, then reset.
  assert.deepEqual(await (await setAdvanceTime(0)).json(), { milliseconds: 0 });
  await advance(clock, periodEnd + 5 * 3600);
  assert.equal((await setAdvanceTime(200)).status, 200);
  assert.equal((await setAdvanceTime('soon')).status, 400);
});

test('6. pause as of 2026-09-30.endive: the pause endpoint, status_details, and both resume payment behaviors', async () => {
  const customer = await customerWith('pm_card_visa');
  const keepNothing = { bill_for: { unused_time_from: { type: 'none' } } };

  // Pausing credits the unused time, for the next invoice by default.
  const credited = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: 'price_pro_monthly' }] });
  assert.equal(credited.billing_mode.type, 'flexible', 'the default billing mode');
  const paused = await stripe.subscriptions.pause(credited.id);
  assert.equal(paused.status, 'paused');
  assert.equal(paused.status_details.paused.type, 'subscription');
  assert.equal(paused.status_details.paused.subscription.type, 'pause_requested');
  assert.ok(paused.status_details.paused.transitioned_at > 0);
  const credits = (await stripe.invoiceItems.list({ customer: customer.id, pending: true })).data;
  assert.ok(credits.length === 1 && credits[0].amount < 0 && credits[0].amount >= -1000, 'the unused time credited');
  await assert.rejects(stripe.subscriptions.pause(credited.id), (err) => err instanceof Stripe.errors.StripeInvalidRequestError);

  // The default, resume_on_payment_attempt: no payment in the request; active right after.
  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: 'price_pro_monthly' }] });
  await stripe.subscriptions.pause(sub.id, keepNothing);
  const resumed = await stripe.subscriptions.resume(sub.id, { expand: ['latest_invoice'] });
  assert.equal(resumed.status, 'paused');
  assert.deepEqual([resumed.latest_invoice.status, resumed.latest_invoice.attempt_count], ['open', 0]);
  const active = await waitFor(async () => { const s = await stripe.subscriptions.retrieve(sub.id, { expand: ['latest_invoice'] }); return s.status === 'active' && s; }, 'active');
  assert.equal(active.latest_invoice.status, 'paid');
  assert.equal(active.status_details, undefined);
  const types = (await eventsOf(sub.id)).map((e) => e.type);
  assert.ok(types.includes('customer.subscription.paused') && types.includes('customer.subscription.resumed'), types.join());

  // resume_on_payment_success: paid in the request; a failure stays paused and is retried.
  const trialing = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: 'price_pro_monthly' }], trial_period_days: 10 });
  await stripe.subscriptions.pause(trialing.id);
  const now = await stripe.subscriptions.resume(trialing.id, { payment_behavior: 'resume_on_payment_success', expand: ['latest_invoice'] });
  assert.deepEqual([now.status, now.latest_invoice.status], ['active', 'paid']);
  assert.equal(now.trial_end, trialing.trial_end, 'resuming leaves trial_end alone');
  const declining = await customerWith('pm_card_visa');
  const later = await stripe.subscriptions.create({ customer: declining.id, items: [{ price: 'price_pro_monthly' }] });
  await stripe.subscriptions.pause(later.id, keepNothing);
  assert.equal((await setOutcome(declining.invoice_settings.default_payment_method, 'insufficient_funds')).status, 200);
  const stays = await stripe.subscriptions.resume(later.id, { payment_behavior: 'resume_on_payment_success', expand: ['latest_invoice'] });
  assert.equal(stays.status, 'paused');
  assert.equal(stays.latest_invoice.attempt_count, 1);
  assert.ok(stays.latest_invoice.next_payment_attempt > 0, 'retried on the dunning schedule');

  // Only flexible billing mode pauses.
  const classic = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: 'price_pro_monthly' }], billing_mode: { type: 'classic' } });
  assert.equal(classic.billing_mode.type, 'classic');
  await assert.rejects(stripe.subscriptions.pause(classic.id), (err) => err instanceof Stripe.errors.StripeInvalidRequestError && /flexible/.test(err.message));
});

test('7. invoices cannot be listed by test_clock (Stripe has no such parameter)', async () => {
  const clock = await stripe.testHelpers.testClocks.create({ frozen_time: Date.UTC(2025, 6, 1) / 1000 });
  await assert.rejects(
    stripe.invoices.list({ test_clock: clock.id }),
    (err) => err instanceof Stripe.errors.StripeInvalidRequestError && err.param === 'test_clock',
  );
});

test('8. a test clock is deleted with its customers 30 days after it was made', async () => {
  // Its own emulator: the control clock moves a month.
  const own = await startEmulator();
  try {
    const clock = await own.stripe.testHelpers.testClocks.create({ frozen_time: Date.UTC(2025, 7, 1) / 1000 });
    assert.equal(clock.deletes_after - clock.created, 30 * day);
    const customer = await own.stripe.customers.create({ email: 'expiring@example.com', test_clock: clock.id });
    const moved = await fetch(`${own.url}/_emulator/clock/advance`, { method: 'POST', body: new URLSearchParams({ seconds: String(30 * day - 60) }) });
    assert.equal(moved.status, 200);
    assert.equal((await own.stripe.testHelpers.testClocks.retrieve(clock.id)).id, clock.id, 'kept until deletes_after');
    await fetch(`${own.url}/_emulator/clock/advance`, { method: 'POST', body: new URLSearchParams({ seconds: '120' }) });
    await assert.rejects(own.stripe.testHelpers.testClocks.retrieve(clock.id), (err) => err.statusCode === 404 && err.code === 'resource_missing');
    assert.equal((await own.stripe.customers.retrieve(customer.id)).deleted, true);
    const deleted = (await own.stripe.events.list({ type: 'test_helpers.test_clock.deleted' })).data;
    assert.deepEqual(deleted.map((e) => e.data.object.id), [clock.id]);
    const { violations } = await own.conformance();
    assert.equal(violations.length, 0, report(violations));
  } finally {
    own.stop();
  }
});

test('every answer and event of this suite matches Stripe\'s schemas (stripe-node\'s types)', async () => {
  const { answers, events, violations } = await emu.conformance();
  assert.ok(answers > 50 && events > 100, `checked ${answers} answers and ${events} events`);
  assert.equal(violations.length, 0, report(violations));
});

test('the conformance check fails on planted defects', async () => {
  const customer = await customerWith('pm_card_chargeCustomerFail');
  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: 'price_pro_monthly' }], expand: ['latest_invoice'] });
  const [payment] = (await stripe.invoicePayments.list({ invoice: sub.latest_invoice.id })).data;
  const intent = JSON.parse(JSON.stringify(await stripe.paymentIntents.retrieve(payment.payment.payment_intent)));
  const subscription = JSON.parse(JSON.stringify(await stripe.subscriptions.retrieve(sub.id)));
  const clean = await check([{ where: 'intent', body: intent }, { where: 'subscription', body: subscription }]);
  assert.deepEqual(clean, [], 'the untouched objects pass');
  const planted = [
    ['null doc_url', { ...intent, last_payment_error: { ...intent.last_payment_error, doc_url: null } }],
    ['no status', (({ status, ...rest }) => rest)(subscription)],
    ['unknown field', { ...subscription, surprise: true }],
    ['string amount', { ...intent, amount: '1000' }],
    ['status outside the enum', { ...subscription, status: 'sleeping' }],
    ['unknown kind', { id: 'thing_1', object: 'thing' }],
  ];
  const violations = await check(planted.map(([where, body]) => ({ where, body })));
  for (const [where] of planted) {
    assert.ok(violations.some((v) => v.where === where), `${where} is caught:\n${report(violations)}`);
  }
});
