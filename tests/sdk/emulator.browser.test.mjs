// A person in headless Chromium on the emulator's hosted Checkout and portal pages.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startEmulator, launchBrowser, startAppStub } from './helpers.mjs';
import { report } from './conformance.mjs';

let emu;
let app;
let browser;

before(async () => {
  emu = await startEmulator();
  app = await startAppStub();
  browser = await launchBrowser();
});
after(async () => { await browser?.close(); emu?.stop(); app?.close(); });

async function openSession(email) {
  const customer = await emu.stripe.customers.create({ email });
  const session = await emu.stripe.checkout.sessions.create({
    mode: 'subscription',
    customer: customer.id,
    line_items: [{ price: 'price_pro_monthly', quantity: 1 }],
    success_url: `${app.url}/success?session_id={CHECKOUT_SESSION_ID}`,
    cancel_url: `${app.url}/pricing`,
  });
  return { customer, session };
}

test('paying with 4242 lands on success_url with the real session id', async () => {
  const { session } = await openSession('browser@example.com');
  const page = await browser.newPage();
  await page.goto(session.url);
  assert.match(await page.textContent('body'), /\$10\.00/);
  assert.equal(await page.inputValue('input[name=email]'), 'browser@example.com');
  await page.fill('#card_number', '4242 4242 4242 4242');
  await page.fill('#exp', '12 / 34');
  await page.fill('#cvc', '123');
  await page.fill('#name', 'Browser Person');
  await Promise.all([page.waitForURL(`${app.url}/success**`), page.click('#submit')]);
  const landed = new URL(page.url());
  assert.equal(landed.pathname, '/success');
  assert.equal(landed.searchParams.get('session_id'), session.id);
  const done = await emu.stripe.checkout.sessions.retrieve(session.id);
  assert.equal(done.status, 'complete');
  await page.close();
});

test('a declined card shows the error and the session stays open', async () => {
  const { session } = await openSession('declined@example.com');
  const page = await browser.newPage();
  await page.goto(session.url);
  await page.fill('#card_number', '4000 0000 0000 9995');
  await page.click('#submit');
  await page.waitForSelector('#error');
  assert.match(await page.textContent('#error'), /insufficient funds/);
  assert.ok(page.url().includes(session.id), 'still on the Checkout page');
  assert.equal((await emu.stripe.checkout.sessions.retrieve(session.id)).status, 'open');
  await page.fill('#card_number', '4000 0000 0000 0002');
  await page.click('#submit');
  await page.waitForSelector('#error');
  assert.match(await page.textContent('#error'), /declined/);
  // The cancel link returns to cancel_url.
  await Promise.all([page.waitForURL(`${app.url}/pricing`), page.click('#cancel')]);
  await page.close();
});

test('canceling in the portal, then returning to return_url', async () => {
  const customer = await emu.stripe.customers.create({ email: 'portal@example.com' });
  const sub = await emu.stripe.subscriptions.create({ customer: customer.id, items: [{ price: 'price_pro_monthly' }], default_payment_method: 'pm_card_visa' });
  const portal = await emu.stripe.billingPortal.sessions.create({ customer: customer.id, return_url: `${app.url}/dashboard` });
  const page = await browser.newPage();
  await page.goto(portal.url);
  assert.match(await page.textContent(`#card-${sub.id}`), /visa •••• 4242/);
  await Promise.all([page.waitForURL(/message=/), page.click(`#cancel-${sub.id}`)]);
  assert.match(await page.textContent('#notice'), /canceled at the end of the billing period/);
  assert.match(await page.textContent('body'), /Cancels on/);
  const after = await emu.stripe.subscriptions.retrieve(sub.id);
  assert.equal(after.cancel_at_period_end, true);
  assert.equal(after.status, 'active');
  await Promise.all([page.waitForURL(`${app.url}/dashboard`), page.click('#return')]);
  assert.equal(await page.textContent('#where'), '/dashboard');
  await page.close();
});

test('what the pages did matches Stripe\'s schemas: every answer and event', async () => {
  const { events, violations } = await emu.conformance();
  assert.ok(events > 10, `${events} events checked`);
  assert.equal(violations.length, 0, report(violations));
});
