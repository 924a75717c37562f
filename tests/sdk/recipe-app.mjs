// A minimal app of the Next.js recipe (t3dotgg/stripe-recommendations) in plain Node, for the
// shared-Redis test (crates/tollgate/tests/api/recipe.rs): the recipe's endpoints and KV code,
// its user taken from an `x-user-id` header where the recipe reads Clerk's `auth()`, and its KV
// the real @upstash/redis client. That client speaks Upstash's REST protocol; the small shim at
// the bottom serves it from a local Redis.
//
// Env: PORT (0: any), REDIS_URL, STRIPE_API_BASE, STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET, and
// VALUE_ENCODING: `raw` (the client's own serializer: a string as it is) or `json` (a wrapper that
// JSON-encodes every value before storing it, as some apps do). Prints its URL on the first line.
import http from 'node:http';
import { Redis } from '@upstash/redis';
import IORedis from 'ioredis';
import Stripe from 'stripe';

const api = new URL(process.env.STRIPE_API_BASE);
const stripe = new Stripe(process.env.STRIPE_SECRET_KEY, {
  host: api.hostname, port: Number(api.port), protocol: api.protocol.replace(':', ''), maxNetworkRetries: 0,
});
const shim = await startShim(process.env.REDIS_URL);
const kv = new Redis({ url: shim, token: 'local', responseEncoding: false, enableTelemetry: false });
const json = process.env.VALUE_ENCODING === 'json';
const put = (key, value) => kv.set(key, json ? JSON.stringify(value) : value);

// The recipe's sync, as its README writes it: the newest subscription, the whole entry overwritten.
async function syncStripeDataToKV(customerId) {
  const subscriptions = await stripe.subscriptions.list({
    customer: customerId, limit: 1, status: 'all', expand: ['data.default_payment_method'],
  });
  if (subscriptions.data.length === 0) {
    const subData = { status: 'none' };
    await put(`stripe:customer:${customerId}`, subData);
    return subData;
  }
  const subscription = subscriptions.data[0];
  const item = subscription.items.data[0];
  const subData = {
    subscriptionId: subscription.id,
    status: subscription.status,
    priceId: item.price.id,
    currentPeriodEnd: item.current_period_end,
    currentPeriodStart: item.current_period_start,
    cancelAtPeriodEnd: subscription.cancel_at_period_end,
    paymentMethod: subscription.default_payment_method && typeof subscription.default_payment_method !== 'string'
      ? { brand: subscription.default_payment_method.card?.brand ?? null, last4: subscription.default_payment_method.card?.last4 ?? null }
      : null,
  };
  await put(`stripe:customer:${customerId}`, subData);
  return subData;
}

const LIVE = ['active', 'trialing', 'past_due', 'unpaid', 'incomplete', 'paused'];

async function route(req, body) {
  const user = req.headers['x-user-id'];
  const url = new URL(req.url, 'http://app');
  if (req.method === 'POST' && url.pathname === '/api/stripe/webhook') {
    const event = stripe.webhooks.constructEvent(body, req.headers['stripe-signature'], process.env.STRIPE_WEBHOOK_SECRET);
    const customerId = event.data.object.customer;
    if (typeof customerId === 'string') await syncStripeDataToKV(customerId);
    return [200, { received: true }];
  }
  if (!user) return [401, { error: 'signed out' }];
  if (req.method === 'POST' && url.pathname === '/api/generate-stripe-checkout') {
    let customerId = await kv.get(`stripe:user:${user}`);
    if (!customerId) {
      const customer = await stripe.customers.create({ email: req.headers['x-user-email'], metadata: { userId: user } });
      await put(`stripe:user:${user}`, customer.id);
      customerId = customer.id;
    }
    // Beyond the README: one subscription per user, checked on the shared cache.
    const cached = await kv.get(`stripe:customer:${customerId}`);
    if (cached && LIVE.includes(cached.status)) return [409, { error: 'already subscribed' }];
    const { priceId } = JSON.parse(body || '{}');
    const session = await stripe.checkout.sessions.create({
      customer: customerId, mode: 'subscription', line_items: [{ price: priceId, quantity: 1 }],
      success_url: 'http://app.test/success', cancel_url: 'http://app.test/',
    });
    return [200, { url: session.url, sessionId: session.id }];
  }
  if (url.pathname === '/success') {
    const customerId = await kv.get(`stripe:user:${user}`);
    if (!customerId) return [303, { location: '/' }];
    return [200, await syncStripeDataToKV(customerId)];
  }
  if (url.pathname === '/api/subscription') {
    const customerId = await kv.get(`stripe:user:${user}`);
    if (!customerId) return [200, { status: 'none' }];
    return [200, (await kv.get(`stripe:customer:${customerId}`)) ?? { status: 'none' }];
  }
  return [404, { error: 'not found' }];
}

const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (chunk) => { body += chunk; });
  req.on('end', async () => {
    try {
      const [status, answer] = await route(req, body);
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
    } catch (error) {
      res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ error: String(error) }));
    }
  });
});
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  console.log(`recipe app listening on http://127.0.0.1:${server.address().port}`);
});

// Upstash's REST protocol served from a real Redis: POST / with one command as a JSON array,
// /pipeline and /multi-exec with an array of them; each answer `{"result": …}` or `{"error": …}`.
function startShim(redisUrl) {
  const redis = new IORedis(redisUrl);
  const run = async (command) => {
    try {
      return { result: await redis.call(...command.map(String)) };
    } catch (error) {
      return { error: String(error.message ?? error) };
    }
  };
  const shimServer = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', async () => {
      const commands = JSON.parse(body);
      const answer = req.url === '/' ? await run(commands) : await Promise.all(commands.map(run));
      const failed = req.url === '/' && answer.error;
      res.writeHead(failed ? 400 : 200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
    });
  });
  return new Promise((resolve) => {
    shimServer.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${shimServer.address().port}`));
  });
}
