// A person in headless Chromium goes through Tollgate as shipped: `tollgate` with no Stripe keys,
// so its embedded emulator hosts Checkout and the portal and sends the webhooks.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import net from 'node:net';
import { launchBrowser, repoRoot, startEmulator, waitFor } from './helpers.mjs';

const tollgateBin = process.env.TOLLGATE_BIN || path.join(process.env.CARGO_TARGET_DIR || path.join(repoRoot, 'target'), 'debug', 'tollgate');
let app;
let browser;

function startTollgate(env = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-browser-'));
  return new Promise((resolve, reject) => {
    const child = spawn(tollgateBin, [], { cwd: dir, env: { ...process.env, PORT: '0', BIND: '', PUBLIC_URL: '', STRIPE_SECRET_KEY: '', PLANS: '', STRIPE_EMULATOR_PORT: '0', KV_URL: 'memory:', RUST_LOG: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const timer = setTimeout(() => reject(new Error(`tollgate did not start: ${out}`)), 20000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/open (http:\/\/localhost:\d+)/);
      const emulator = out.match(/Stripe emulator at (http:\/\/\S+)/);
      // With Stripe keys there is no embedded emulator to wait for.
      if (m && (emulator || env.STRIPE_SECRET_KEY)) {
        clearTimeout(timer);
        // Its working directory goes with it: the test script counts what tests leave in the temp dir.
        resolve({ url: m[1], emulator: emulator?.[1], stop: () => { child.kill('SIGKILL'); fs.rmSync(dir, { recursive: true, force: true }); } });
      }
    });
    child.stderr.on('data', (d) => { out += d; });
    child.on('exit', (code) => reject(new Error(`tollgate exited with ${code}: ${out}`)));
  });
}

// After the sign-up form: the "check your email" page points at the local outbox (no SMTP);
// open the newest message to `email`, follow its link and choose `password` there.
async function signUpByEmail(page, email, password) {
  await Promise.all([page.waitForSelector('#check-email'), page.click('#sign-up-submit')]);
  assert.equal(await page.textContent('#sent-to'), email);
  await Promise.all([page.waitForURL('**/dev/outbox'), page.click('#open-outbox')]);
  await followEmailedLink(page, email, 'Confirm your email');
  await page.fill('#confirm-password', password);
  await Promise.all([page.waitForURL('**/dashboard?notice=welcome'), page.click('#confirm-submit')]);
}

// In the outbox, click the link of the newest message to `email` whose subject matches.
async function followEmailedLink(page, email, subject) {
  const mail = page.locator('.mail', { has: page.locator('.mail-to', { hasText: email }) })
    .filter({ has: page.locator('.mail-subject', { hasText: subject }) }).first();
  await Promise.all([page.waitForLoadState('load'), mail.locator('a.mail-link').click()]);
}

before(async () => { app = await startTollgate(); browser = await launchBrowser(); });
after(async () => { await browser?.close(); app?.stop(); });

test('sign up, subscribe, pay, and see the subscription; then cancel in the portal', async () => {
  const page = await browser.newPage();
  await page.goto(`${app.url}/`);
  assert.match(await page.textContent('#plans'), /Tollgate Pro[\s\S]*\$12\.00[\s\S]*\$120\.00/);
  await page.click('#sign-in');
  await page.fill('#up-email', 'Person@Example.com');
  await signUpByEmail(page, 'person@example.com', 'correct horse battery');
  assert.match(await page.textContent('#notice'), /Welcome/);
  assert.equal(await page.textContent('#email'), 'person@example.com');

  await page.click('#subscribe');
  await Promise.all([page.waitForURL(/\/c\/pay\/cs_test_/), page.click('#subscribe-price_tollgate_monthly')]);
  assert.match(await page.textContent('body'), /\$12\.00/);
  assert.equal(await page.inputValue('input[name=email]'), 'person@example.com');
  await page.fill('#card_number', '4000 0000 0000 9995');
  await page.click('#submit');
  await page.waitForSelector('#error');
  assert.match(await page.textContent('#error'), /insufficient funds/);
  await page.fill('#card_number', '4242 4242 4242 4242');
  await page.fill('#exp', '12 / 34');
  await page.fill('#cvc', '123');
  await Promise.all([page.waitForURL(`${app.url}/dashboard`), page.click('#submit')]);
  assert.equal(await page.textContent('#status'), 'active');
  assert.match(await page.textContent('#plan'), /Tollgate Pro \(\$12\.00 per month\)/);
  assert.equal(await page.textContent('#card'), 'visa •••• 4242');
  await Promise.all([page.waitForURL(`${app.url}/app`), page.click('#open-app')]);
  assert.match(await page.textContent('#entitled'), /active/);

  await page.goto(`${app.url}/dashboard`);
  await Promise.all([page.waitForURL(/\/p\/session\/bps_/), page.click('#manage-billing')]);
  await Promise.all([page.waitForURL(/message=/), page.click('button[id^=cancel-sub_]')]);
  await Promise.all([page.waitForURL(`${app.url}/dashboard`), page.click('#return')]);
  // The portal's change reaches Tollgate by webhook; the dashboard shows it once synced.
  for (let i = 0; i < 40 && !(await page.$('#cancels')); i++) {
    await new Promise((r) => setTimeout(r, 100));
    await page.reload();
  }
  assert.match(await page.textContent('#cancels'), /cancel at the end of the billing period/);
  assert.equal(await page.textContent('#status'), 'active');
  await page.close();
});

test('sign up, confirm by email, forget the password, reset it by email, sign in with the new one', async () => {
  const page = await browser.newPage();
  await page.goto(`${app.url}/auth`);
  await page.fill('#up-email', 'forgetful@example.com');
  await signUpByEmail(page, 'forgetful@example.com', 'first long password');
  assert.equal(await page.textContent('#email'), 'forgetful@example.com');
  await Promise.all([page.waitForURL(/\/\?notice=signed-out/), page.click('#sign-out')]);

  await page.goto(`${app.url}/auth`);
  await Promise.all([page.waitForURL('**/auth/reset'), page.click('#forgot-password')]);
  await page.fill('#reset-email', 'forgetful@example.com');
  await Promise.all([page.waitForSelector('#check-email'), page.click('#reset-submit')]);
  await Promise.all([page.waitForURL('**/dev/outbox'), page.click('#open-outbox')]);
  assert.match(await page.textContent('body'), /Reset your password/);
  await followEmailedLink(page, 'forgetful@example.com', 'Reset your password');
  assert.match(page.url(), /\/auth\/reset\/new\?token=/);
  await page.fill('#new-password', 'short');
  await Promise.all([page.waitForSelector('#new-password-error'), page.click('#new-password-submit')]);
  assert.match(await page.textContent('#new-password-error'), /at least 10 characters/);
  await page.fill('#new-password', 'second long password');
  await Promise.all([page.waitForURL('**/auth?notice=password-changed'), page.click('#new-password-submit')]);
  assert.match(await page.textContent('#notice'), /Your password was changed/);

  await page.fill('#in-email', 'forgetful@example.com');
  await page.fill('#in-password', 'first long password');
  await Promise.all([page.waitForSelector('#sign-in-error'), page.click('#sign-in-submit')]);
  assert.match(await page.textContent('#sign-in-error'), /do not match an account/);
  await page.fill('#in-password', 'second long password');
  await Promise.all([page.waitForURL('**/dashboard'), page.click('#sign-in-submit')]);
  assert.equal(await page.textContent('#email'), 'forgetful@example.com');
  await page.close();
});

// A product of its own behind Tollgate's gateway: it shows the email it read from the headers.
test('through the gateway: sign up, subscribe, then the product sees who the user is', async () => {
  const product = http.createServer((req, res) => {
    const email = String(req.headers['x-forwarded-email'] || 'nobody').replace(/[<>&]/g, '');
    res.writeHead(200, { 'content-type': 'text/html' }).end(`<!doctype html><title>Product</title><p id="product-email">${email}</p><p id="entitled">${req.headers['x-tollgate-entitled']}</p>`);
  });
  await new Promise((resolve) => product.listen(0, '127.0.0.1', resolve));
  const gateway = await startTollgate({ UPSTREAM_URL: `http://127.0.0.1:${product.address().port}`, GATED_PATHS: '/app' });
  try {
    const page = await browser.newPage();
    await page.goto(`${gateway.url}/app/projects`);
    assert.match(page.url(), /\/auth\?next=%2Fapp%2Fprojects$/, 'a visitor is sent to sign in');
    await page.goto(`${gateway.url}/auth`);
    await page.fill('#up-email', 'maker@example.com');
    await signUpByEmail(page, 'maker@example.com', 'correct horse battery');
    await page.goto(`${gateway.url}/app/projects`);
    assert.match(page.url(), /notice=subscribe/, 'not subscribed yet: the pricing page');
    await Promise.all([page.waitForURL(/\/c\/pay\/cs_test_/), page.click('#subscribe-price_tollgate_monthly')]);
    await page.fill('#card_number', '4242 4242 4242 4242');
    await page.fill('#exp', '12 / 34');
    await page.fill('#cvc', '123');
    await Promise.all([page.waitForURL(`${gateway.url}/dashboard`), page.click('#submit')]);
    await page.goto(`${gateway.url}/app/projects`);
    assert.equal(await page.textContent('#product-email'), 'maker@example.com');
    assert.equal(await page.textContent('#entitled'), 'true');
    await page.close();
  } finally {
    gateway.stop();
    product.close();
  }
});

// Pay on the emulator's Checkout page with a card that goes through, landing on the dashboard.
async function payWithCard(page, appUrl) {
  await page.fill('#card_number', '4242 4242 4242 4242');
  await page.fill('#exp', '12 / 34');
  await page.fill('#cvc', '123');
  await Promise.all([page.waitForURL(`${appUrl}/dashboard`), page.click('#submit')]);
}

// Reload the dashboard until its status reads `status` (a webhook has to arrive and be synced).
async function dashboardShows(page, appUrl, status) {
  for (let i = 0; i < 50; i++) {
    await page.goto(`${appUrl}/dashboard`);
    if ((await page.textContent('#status')) === status) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(await page.textContent('#status'), status);
}

test('one trial per customer: a trial, its end, then the next subscription is paid at once', async () => {
  const trialApp = await startTollgate({ TRIAL_DAYS: '7' });
  const stripe = (method, path) => fetch(`${trialApp.emulator}${path}`, { method, headers: { authorization: 'Bearer sk_test_tollgate_emulator' } }).then((r) => r.json());
  try {
    const page = await browser.newPage();
    await page.goto(`${trialApp.url}/auth`);
    await page.fill('#up-email', 'trier@example.com');
    await signUpByEmail(page, 'trier@example.com', 'correct horse battery');
    await page.goto(`${trialApp.url}/`);
    assert.match(await page.textContent('#plans'), /7-day free trial/);
    await Promise.all([page.waitForURL(/\/c\/pay\/cs_test_/), page.click('#subscribe-price_tollgate_monthly')]);
    assert.match(await page.textContent('body'), /7 days free/);
    await payWithCard(page, trialApp.url);
    assert.equal(await page.textContent('#status'), 'trialing');

    // The trial ends without being paid for (the subscription is cancelled in Stripe).
    const [trial] = (await stripe('GET', '/v1/subscriptions?status=all')).data;
    assert.equal(trial.status, 'trialing');
    await stripe('DELETE', `/v1/subscriptions/${trial.id}`);
    await dashboardShows(page, trialApp.url, 'canceled');

    await page.goto(`${trialApp.url}/`);
    assert.doesNotMatch(await page.textContent('#plans'), /free trial/, 'no second trial promised');
    await Promise.all([page.waitForURL(/\/c\/pay\/cs_test_/), page.click('#subscribe-price_tollgate_monthly')]);
    assert.doesNotMatch(await page.textContent('body'), /days free/);
    assert.match(await page.textContent('body'), /\$12\.00/);
    await payWithCard(page, trialApp.url);
    assert.equal(await page.textContent('#status'), 'active', 'paid at once');
    const subscriptions = (await stripe('GET', '/v1/subscriptions?status=all')).data;
    assert.deepEqual(subscriptions.map((s) => [s.status, s.trial_end === null]).sort(), [['active', true], ['canceled', false]]);
    await page.close();
  } finally {
    trialApp.stop();
  }
});

test('a promotion code entered on Checkout shows on the dashboard with its end', async () => {
  const promoApp = await startTollgate({ ALLOW_PROMOTION_CODES: 'true' });
  const stripe = (path, form) => fetch(`${promoApp.emulator}${path}`, { method: 'POST', body: new URLSearchParams(form), headers: { authorization: 'Bearer sk_test_tollgate_emulator' } }).then((r) => r.json());
  try {
    const coupon = await stripe('/v1/coupons', { percent_off: '20', duration: 'repeating', duration_in_months: '3', name: 'Launch' });
    await stripe('/v1/promotion_codes', { 'promotion[type]': 'coupon', 'promotion[coupon]': coupon.id, code: 'LAUNCH' });
    const page = await browser.newPage();
    await page.goto(`${promoApp.url}/auth`);
    await page.fill('#up-email', 'early@example.com');
    await signUpByEmail(page, 'early@example.com', 'correct horse battery');
    await page.goto(`${promoApp.url}/`);
    await Promise.all([page.waitForURL(/\/c\/pay\/cs_test_/), page.click('#subscribe-price_tollgate_monthly')]);
    await page.fill('#card_number', '4242 4242 4242 4242');
    await page.fill('#promotion_code', 'NOPE');
    await page.click('#submit');
    await page.waitForSelector('#error');
    assert.match(await page.textContent('#error'), /invalid/);
    await page.fill('#card_number', '4242 4242 4242 4242');
    await page.fill('#promotion_code', 'launch');
    await Promise.all([page.waitForURL(`${promoApp.url}/dashboard`), page.click('#submit')]);
    assert.equal(await page.textContent('#status'), 'active');
    assert.match(await page.textContent('#discount'), /^LAUNCH: 20% off until \d{1,2} \w+ \d{4}$/);
    await page.close();
  } finally {
    promoApp.stop();
  }
});

// A port nothing listens on now, for a server that must be named before it starts.
function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => { const { port } = server.address(); server.close(() => resolve(port)); });
  });
}

test('plans: Basic, a previewed upgrade to Team charged at once, a downgrade at the period\'s end, then Basic again', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-plans-'));
  const seed = path.join(dir, 'seed.json');
  fs.writeFileSync(seed, JSON.stringify({ products: [
    { id: 'prod_basic', name: 'Basic', prices: [{ id: 'price_basic_monthly', unit_amount: 500, currency: 'usd', interval: 'month' }] },
    { id: 'prod_team', name: 'Team', prices: [{ id: 'price_team_monthly', unit_amount: 2000, currency: 'usd', interval: 'month' }] },
  ] }));
  const port = await freePort();
  const secret = 'whsec_browser_plans_secret';
  const emu = await startEmulator({ webhook: `http://127.0.0.1:${port}/api/stripe-webhook`, secret, seed });
  const plansApp = await startTollgate({
    PORT: String(port), STRIPE_SECRET_KEY: 'sk_test_browser_plans', STRIPE_WEBHOOK_SECRET: secret, STRIPE_API_BASE: emu.url,
    PLANS: 'price_basic_monthly,price_team_monthly', STRIPE_RATE_LIMIT: 'off',
  });
  try {
    const page = await browser.newPage();
    // The cache (through Tollgate's API) and Stripe agree on the plan and what is scheduled.
    const agree = async (price, scheduled) => {
      const cached = await page.evaluate(() => fetch('/api/subscription', { headers: { accept: 'application/json' } }).then((r) => r.json()));
      const sub = await emu.stripe.subscriptions.retrieve(cached.subscriptionId);
      assert.equal(cached.priceId, price);
      assert.equal(sub.items.data[0].price.id, price);
      assert.equal(cached.scheduledPriceId, scheduled);
      return sub;
    };
    await page.goto(`${plansApp.url}/auth`);
    await page.fill('#up-email', 'planner@example.com');
    await signUpByEmail(page, 'planner@example.com', 'correct horse battery');
    await page.goto(`${plansApp.url}/`);
    await Promise.all([page.waitForURL(/\/c\/pay\/cs_test_/), page.click('#subscribe-price_basic_monthly')]);
    await page.fill('#card_number', '4242 4242 4242 4242');
    await Promise.all([page.waitForURL(`${plansApp.url}/dashboard`), page.click('#submit')]);
    assert.match(await page.textContent('#plan'), /Basic/);
    await agree('price_basic_monthly', undefined);

    // The preview is Stripe's proration; the upgrade charges it and shows Team at once.
    const terms = await page.textContent('#terms-price_team_monthly');
    const [, shown] = terms.match(/^\$(\d+\.\d\d) due now$/);
    assert.ok(Number(shown) > 14.5 && Number(shown) <= 15, terms);
    await Promise.all([page.waitForURL(/notice=plan-changed/), page.click('#switch-price_team_monthly')]);
    assert.match(await page.textContent('#plan'), /Team/);
    const upgraded = await agree('price_team_monthly', undefined);
    const invoice = await emu.stripe.invoices.retrieve(upgraded.latest_invoice);
    assert.equal((invoice.amount_paid / 100).toFixed(2), shown, 'charged what the dashboard said');

    // Back to Basic: at the period's end, shown as scheduled.
    assert.match(await page.textContent('#terms-price_basic_monthly'), /nothing due now/);
    await Promise.all([page.waitForURL(/notice=plan-scheduled/), page.click('#switch-price_basic_monthly')]);
    assert.match(await page.textContent('#scheduled'), /Basic/);
    const scheduled = await agree('price_team_monthly', 'price_basic_monthly');

    // The period ends (its invoice is charged an hour later): Basic, by webhook and sync.
    const seconds = scheduled.items.data[0].current_period_end - Math.floor(Date.now() / 1000) + 3700;
    const advanced = await fetch(`${emu.url}/_emulator/clock/advance`, { method: 'POST', body: new URLSearchParams({ seconds: String(seconds) }) });
    assert.equal(advanced.status, 200);
    for (let i = 0; i < 50 && !/Basic/.test(await page.textContent('#plan')); i++) {
      await new Promise((r) => setTimeout(r, 100));
      await page.goto(`${plansApp.url}/dashboard`);
    }
    assert.match(await page.textContent('#plan'), /Basic/);
    assert.equal(await page.$('#scheduled'), null);
    assert.equal(await page.textContent('#status'), 'active');
    await agree('price_basic_monthly', undefined);
    await page.close();
  } finally {
    plansApp.stop();
    emu.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('teams: an owner subscribes Acme per seat, two people join and one leaves, the bill follows, the product sees each member', async () => {
  const product = http.createServer((req, res) => {
    const said = (name) => String(req.headers[name] || '').replace(/[<>&]/g, '');
    res.writeHead(200, { 'content-type': 'text/html' }).end(`<!doctype html><title>Product</title><p id="product-email">${said('x-forwarded-email')}</p><p id="product-org">${said('x-tollgate-org-slug')}</p><p id="product-role">${said('x-tollgate-org-role')}</p>`);
  });
  await new Promise((resolve) => product.listen(0, '127.0.0.1', resolve));
  const teams = await startTollgate({
    UPSTREAM_URL: `http://127.0.0.1:${product.address().port}`, GATED_PATHS: '/app',
    BILLING_SUBJECT: 'organization', SEAT_PRICES: 'price_tollgate_monthly',
  });
  const stripe = (method, path, form) => fetch(`${teams.emulator}${path}`, { method, body: form && new URLSearchParams(form), headers: { authorization: 'Bearer sk_test_tollgate_emulator' } }).then((r) => r.json());
  const seats = async () => (await stripe('GET', '/v1/subscriptions?status=all')).data[0]?.items.data[0].quantity;
  const seatsBecome = (n) => waitFor(async () => (await seats()) === n, `${n} seats in Stripe`);
  const contexts = [];
  const person = async (email) => {
    const context = await browser.newContext();
    contexts.push(context);
    const page = await context.newPage();
    await page.goto(`${teams.url}/auth`);
    await page.fill('#up-email', email);
    await signUpByEmail(page, email, 'correct horse battery');
    return page;
  };
  try {
    const owner = await person('owner@acme.test');
    await owner.goto(`${teams.url}/orgs`);
    await owner.fill('#org-name', 'Acme');
    await Promise.all([owner.waitForURL(/\/orgs\/org_\w+\?notice=org-created/), owner.click('#create-org')]);
    const orgPage = owner.url().split('?')[0];
    assert.equal(await owner.textContent('#org-menu'), 'acme', 'the header names the active organization');

    // Acme subscribes: one seat, the owner's.
    await owner.goto(`${teams.url}/`);
    await Promise.all([owner.waitForURL(/\/c\/pay\/cs_test_/), owner.click('#subscribe-price_tollgate_monthly')]);
    await payWithCard(owner, teams.url);
    assert.equal(await owner.textContent('#status'), 'active');
    assert.equal(await owner.textContent('#team-name'), 'Acme');
    assert.equal(await seats(), 1);

    // Two invitations, accepted from the emailed links.
    for (const email of ['ada@acme.test', 'bob@acme.test']) {
      await owner.goto(orgPage);
      await owner.fill('#invite-email', email);
      await Promise.all([owner.waitForURL(/notice=invited/), owner.click('#invite')]);
    }
    const members = {};
    for (const email of ['ada@acme.test', 'bob@acme.test']) {
      const page = await person(email);
      await page.goto(`${teams.url}/dev/outbox`);
      await followEmailedLink(page, email, 'invited you to Acme');
      await Promise.all([page.waitForURL(/\/dashboard\?notice=joined/), page.click('#accept-invitation')]);
      assert.equal(await page.textContent('#team-name'), 'Acme');
      assert.match(await page.textContent('#ask-billing'), /owner@acme\.test/, 'a member is told whom to ask');
      assert.equal(await page.$('#manage-billing'), null, 'and sees no billing buttons');
      members[email] = page;
    }
    await seatsBecome(3);
    const items = await stripe('GET', '/v1/invoiceitems?limit=100');
    assert.ok(items.data.some((item) => item.proration), 'the added seats are prorated');

    // Each member reaches the product, which is told the organization and the role.
    for (const [email, page] of [['owner@acme.test', owner], ...Object.entries(members)]) {
      await page.goto(`${teams.url}/app/projects`);
      assert.equal(await page.textContent('#product-email'), email);
      assert.equal(await page.textContent('#product-org'), 'acme');
    }
    assert.equal(await members['bob@acme.test'].textContent('#product-role'), 'member');

    // The owner removes Bob: two seats, and Bob is back on the pricing page.
    await owner.goto(orgPage);
    const bobRow = owner.locator('tr', { has: owner.locator('td.email', { hasText: 'bob@acme.test' }) });
    await Promise.all([owner.waitForURL(/notice=removed/), bobRow.locator('button[id^=remove-]').click()]);
    await seatsBecome(2);
    // The gateway keeps an identity for a second (IDENTITY_KEPT): Bob is refused within it.
    await waitFor(async () => {
      await members['bob@acme.test'].goto(`${teams.url}/app/projects`);
      return /notice=subscribe/.test(members['bob@acme.test'].url());
    }, 'Bob refused within a second of his removal', 3000);

    // The owner cancels; when the period ends, nobody in Acme reaches the product.
    await owner.goto(`${teams.url}/dashboard`);
    await Promise.all([owner.waitForURL(/notice=cancel-scheduled/), owner.click('#cancel-at-period-end')]);
    const [subscription] = (await stripe('GET', '/v1/subscriptions?status=all')).data;
    const seconds = subscription.items.data[0].current_period_end - Math.floor(Date.now() / 1000) + 60;
    assert.equal((await fetch(`${teams.emulator}/_emulator/clock/advance`, { method: 'POST', body: new URLSearchParams({ seconds: String(seconds) }) })).status, 200);
    await waitFor(async () => {
      await members['ada@acme.test'].goto(`${teams.url}/app/projects`);
      return /notice=subscribe/.test(members['ada@acme.test'].url());
    }, 'Ada refused once the subscription ended');
    await owner.goto(`${teams.url}/app/projects`);
    assert.match(owner.url(), /notice=subscribe/);
  } finally {
    for (const context of contexts) await context.close();
    teams.stop();
    product.close();
  }
});
