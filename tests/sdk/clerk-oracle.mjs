// The oracle for Tollgate's Clerk rules: `@clerk/backend`'s own `authenticateRequest`, run on the
// cases `crates/tollgate/tests/api/clerk_oracle.rs` describes. Usage:
//   node clerk-oracle.mjs <cases.json>
// prints one verdict per case (JSON): signed in as whom, signed out, a redirect (where to, and the
// cookies set), or an error (Clerk throws). Each case's tokens are minted here, just before its
// request, from the same description the Rust side mints from, so time-sensitive cases (a token
// 4 s past expiry, inside Clerk's 5 s skew) do not depend on how long the run takes.
import { readFileSync } from 'node:fs';
import { createSign } from 'node:crypto';
import { createClerkClient } from '@clerk/backend';

const spec = JSON.parse(readFileSync(process.argv[2], 'utf8'));

const base64url = (bytes) => Buffer.from(bytes).toString('base64url');
const padded = (bytes) => Buffer.from(bytes).toString('base64').replaceAll('+', '-').replaceAll('/', '_');

// `{{tN}}`, `{{now}}`, `{{now+N}}`, `{{now-N}}`.
function expand(text, now, tokens) {
  return text.replace(/\{\{(t(\d+)|now([+-]\d+)?)\}\}/g, (_, __, index, offset) =>
    index !== undefined ? tokens[Number(index)] : String(now + Number(offset ?? 0)));
}

// Claims: `{"$now": N}` is now + N; strings are expanded (a handshake token's cookie lines name
// the tokens minted before it).
function resolve(value, now, tokens) {
  if (Array.isArray(value)) return value.map((v) => resolve(v, now, tokens));
  if (value && typeof value === 'object') {
    if ('$now' in value) return now + value.$now;
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, resolve(v, now, tokens)]));
  }
  return typeof value === 'string' ? expand(value, now, tokens) : value;
}

// A segment's JSON, with trailing spaces when it must carry `=` padding.
function segment(json, pad) {
  let text = JSON.stringify(json);
  if (!pad) return base64url(text);
  while (text.length % 3 === 0) text += ' ';
  return padded(text);
}

function mint(token, now, tokens) {
  const header = segment(token.header, token.pad === 'header');
  const payload = segment(resolve(token.claims, now, tokens), token.pad === 'payload');
  const signer = createSign({ RS256: 'SHA256', RS384: 'SHA384', RS512: 'SHA512' }[token.alg]);
  signer.update(`${header}.${payload}`);
  const signature = signer.sign(spec.keys[token.key]);
  return `${header}.${payload}.${token.pad === 'signature' ? padded(signature) : base64url(signature)}`;
}

const clients = Object.fromEntries(
  Object.entries(spec.instances).map(([name, instance]) => [
    name,
    createClerkClient({
      publishableKey: instance.publishableKey,
      secretKey: instance.secretKey,
      apiUrl: instance.apiUrl,
      telemetry: { disabled: true },
    }),
  ]),
);

async function verdict(testCase) {
  const now = Math.floor(Date.now() / 1000);
  const tokens = [];
  for (const token of testCase.tokens) tokens.push(mint(token, now, tokens));
  const headers = new Headers();
  for (const [name, value] of testCase.headers) headers.append(name, expand(value, now, tokens));
  const instance = spec.instances[testCase.instance];
  const request = new Request(instance.origin + expand(testCase.path, now, tokens), { method: testCase.method, headers });
  let state;
  try {
    state = await clients[testCase.instance].authenticateRequest(request, {
      authorizedParties: instance.authorizedParties,
      jwtKey: instance.jwtKey,
    });
  } catch (error) {
    return { kind: 'error', detail: String(error) };
  }
  const setCookies = state.headers.getSetCookie();
  const location = state.headers.get('location');
  if (location) return { kind: 'redirect', location, setCookies };
  if (state.status === 'handshake') return { kind: 'error', detail: 'a handshake without a location' };
  const auth = state.toAuth();
  if (!auth?.userId) return { kind: 'signed-out', setCookies };
  return { kind: 'signed-in', user: auth.userId, setCookies, ...organization(auth) };
}

// Clerk's active organization as Tollgate documents its reading of it: an id of the shape
// `org_…` (anything else is no organization), `org:admin` an admin and any other role a member,
// the slug as given (none: empty).
function organization({ orgId, orgRole, orgSlug }) {
  if (typeof orgId !== 'string' || !/^org_[A-Za-z0-9_]+$/.test(orgId) || orgId.length > 255) return {};
  return { org: { id: orgId, role: orgRole === 'org:admin' ? 'admin' : 'member', slug: typeof orgSlug === 'string' ? orgSlug : '' } };
}

// Clerk logs its reasoning on stderr; only the verdicts go to stdout.
console.log = console.warn = console.info = (...args) => process.stderr.write(`${args.join(' ')}\n`);
const verdicts = [];
for (const testCase of spec.cases) verdicts.push(await verdict(testCase));
process.stdout.write(JSON.stringify(verdicts));
