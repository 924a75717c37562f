// Shared helpers: start real servers (the emulator binary, a webhook receiver) on free loopback ports.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Stripe from 'stripe';
import { checkRecording } from './conformance.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');
export const seedFile = path.join(repoRoot, 'tests', 'fixtures', 'seed.json');

/** Start a built binary that prints "... listening on http://HOST:PORT" as its first line; resolves with its URL. */
export function startServer(bin, args, env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`${bin} did not start: ${out}${err}`)), 20000);
    child.stderr.on('data', (d) => { err += d; });
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/[^\s]+)/);
      if (m) {
        clearTimeout(timer);
        resolve({ url: m[1], output: () => out + err, stop: () => child.kill('SIGKILL') });
      }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`${bin} exited with ${code}: ${out}${err}`)); });
  });
}

export const emulatorBin = process.env.EMULATOR_BIN || path.join(process.env.CARGO_TARGET_DIR || path.join(repoRoot, 'target'), 'debug', 'stripe-emulator');

/**
 * The emulator with the test seed (or another) and a webhook endpoint; retries compressed to
 * milliseconds. It records every answer, so `conformance()` can check them all (and every event)
 * against Stripe's schemas before `stop()`, which removes the recording.
 */
export async function startEmulator({ webhook, secret, seed = seedFile } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'emulator-answers-'));
  const recording = path.join(dir, 'answers.jsonl');
  const args = ['--port', '0', '--seed', seed, '--retry-base-ms', '50', '--webhook-timeout-ms', '2000', '--record-responses', recording];
  if (webhook) args.push('--webhook', webhook, '--webhook-secret', secret);
  const server = await startServer(emulatorBin, args);
  const { hostname, port } = new URL(server.url);
  const stripe = new Stripe('sk_test_sdk_suite', { host: hostname, port: Number(port), protocol: 'http', maxNetworkRetries: 0 });
  const stop = () => { server.stop(); fs.rmSync(dir, { recursive: true, force: true }); };
  const conformance = () => checkRecording(recording, server.url);
  return { ...server, stripe, stop, conformance };
}

/** A webhook receiver that keeps each raw body and its Stripe-Signature header. */
export function startReceiver({ failFirst = 0 } = {}) {
  const received = [];
  let calls = 0;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      calls += 1;
      if (calls <= failFirst) {
        res.writeHead(500).end('not yet');
        return;
      }
      received.push({ body: Buffer.concat(chunks).toString('utf8'), signature: req.headers['stripe-signature'], at: Date.now() });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"received":true}');
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({ url: `http://127.0.0.1:${server.address().port}/hook`, received, close: () => server.close() });
    });
  });
}

export async function waitFor(check, what, timeoutMs = 10000) {
  const start = Date.now();
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Headless Debian Chromium, started as this machine needs (root, closed network). */
export async function launchBrowser() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
}

/** A stand-in for the app's own pages: answers every path with a page naming the path and query. */
export function startAppStub() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' }).end(`<h1 id="where">${req.url.replace(/[<>&"]/g, '')}</h1>`);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() }));
  });
}
