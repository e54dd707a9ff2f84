// The only way the page talks to the server: the public HTTP API, on this origin.
// Every failure becomes a Problem carrying the API's problem+json document, so every
// view can show its `detail`.

import * as session from './session.js';

/** An API refusal or a failure to reach the API. */
export class Problem extends Error {
  constructor(status, document, retryAfter) {
    super(document.detail || document.title || `HTTP ${status}`);
    this.status = status;
    this.code = document.code || (status === 0 ? 'network' : `http_${status}`);
    this.title = document.title || (status === 0 ? 'No connection' : `HTTP ${status}`);
    this.detail = document.detail || '';
    this.errors = Array.isArray(document.errors) ? document.errors : [];
    this.seats = Array.isArray(document.seats) ? document.seats : [];
    this.retryAfter = retryAfter;
  }
}

// The server's clock minus ours, in milliseconds, so countdowns end when the server's deadline does.
let clockOffset = 0;
let preciseClock = false;

/** Now, by the server's clock, in milliseconds since the epoch. */
export function serverNow() {
  return Date.now() + clockOffset;
}

/** Sets the clock offset from a server time known to the millisecond that fell between two of our instants. */
export function observeServerTime(serverMilliseconds, sentAt, receivedAt) {
  clockOffset = serverMilliseconds - (sentAt + receivedAt) / 2;
  preciseClock = true;
}

function observeDateHeader(headers, receivedAt) {
  const date = Date.parse(headers.get('date') || '');
  // The Date header has whole seconds: its middle is 500 ms later.
  if (!preciseClock && !Number.isNaN(date)) clockOffset = date + 500 - receivedAt;
}

/** A random v4 UUID; also outside a secure context, where crypto.randomUUID is missing. */
export function randomKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((byte) => byte.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * One user intent (reserve these seats, pay this hold). Its Idempotency-Key stays the
 * same for as long as the request body does, so a double click, a retry after a lost
 * answer, or a click while the first is still running never does the thing twice; a new
 * body, or `reset()` once the intent is over, starts a new key.
 */
export class Intent {
  key(body) {
    const text = JSON.stringify(body ?? null);
    if (text !== this.body) {
      this.body = text;
      this.value = randomKey();
    }
    return this.value;
  }

  reset() {
    this.body = undefined;
  }
}

const IN_PROGRESS_RETRIES = 20;
const IN_PROGRESS_DELAY_MS = 250;

function sleep(milliseconds) {
  return new Promise((resolve) => setTimeout(resolve, milliseconds));
}

async function readBody(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { detail: text.slice(0, 300) };
  }
}

async function send(method, path, options, key) {
  const headers = { Accept: 'application/json, application/problem+json', ...(options.headers || {}) };
  const token = options.token === undefined ? session.token() : options.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  if (key) headers['Idempotency-Key'] = key;
  let body;
  if (options.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(options.body);
  }
  const sentAt = Date.now();
  let response;
  try {
    response = await fetch(path, { method, headers, body, cache: 'no-store', credentials: 'omit' });
  } catch (error) {
    throw new Problem(0, { detail: `cannot reach the API (${error.message}); try again` });
  }
  const receivedAt = Date.now();
  observeDateHeader(response.headers, receivedAt);
  const document = await readBody(response);
  return { response, document, sentAt, receivedAt };
}

/**
 * Calls the API. Mutating calls carry an Idempotency-Key (from `options.intent`, else a
 * new one); a 409 `idempotency_in_progress` (the same key still running, as after a
 * double click) is waited out and asked again. Resolves to `{status, body, headers,
 * sentAt, receivedAt}` on 2xx; rejects with a Problem otherwise.
 */
export async function call(method, path, options = {}) {
  const key = method === 'GET' ? null : options.intent ? options.intent.key(options.body) : randomKey();
  for (let attempt = 0; ; attempt += 1) {
    const { response, document, sentAt, receivedAt } = await send(method, path, options, key);
    if (response.ok) {
      return { status: response.status, body: document, headers: response.headers, sentAt, receivedAt };
    }
    const problem = new Problem(response.status, document || {}, Number(response.headers.get('retry-after')) || null);
    if (problem.code === 'idempotency_in_progress' && attempt < IN_PROGRESS_RETRIES) {
      await sleep(IN_PROGRESS_DELAY_MS);
      continue;
    }
    throw problem;
  }
}

/** GET and return the body. */
export async function get(path, options) {
  return (await call('GET', path, options)).body;
}
