// Shared helpers of the Stampede k6 scripts: environment, tokens, creating a sale,
// classifying reserve outcomes, and a compact end-of-test summary.
import http from 'k6/http';
import { check } from 'k6';
import { mintToken } from './jwt.js';

/** The API under test, without a trailing slash. */
export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');

/** Lifetime of minted tokens: long enough for any run. */
const TOKEN_TTL_SECONDS = intEnv('TOKEN_TTL_SECONDS', 3 * 3600);

/** A string environment variable, or `fallback`. */
export function env(name, fallback) {
  const value = __ENV[name];
  return value === undefined || value === '' ? fallback : value;
}

/** An integer environment variable, or `fallback`; a non-integer is an error. */
export function intEnv(name, fallback) {
  const value = __ENV[name];
  if (value === undefined || value === '') {
    return fallback;
  }
  const parsed = Number(value);
  if (!Number.isInteger(parsed)) {
    throw new Error(`${name} must be an integer, got ${JSON.stringify(value)}`);
  }
  return parsed;
}

/** A number environment variable (may be fractional), or `fallback`. */
export function numberEnv(name, fallback) {
  const value = __ENV[name];
  if (value === undefined || value === '') {
    return fallback;
  }
  const parsed = Number(value);
  if (!Number.isFinite(parsed)) {
    throw new Error(`${name} must be a number, got ${JSON.stringify(value)}`);
  }
  return parsed;
}

/** A list of positive integers from a comma-separated variable, or []. */
export function idListEnv(name) {
  const value = env(name, '');
  if (!value) {
    return [];
  }
  return value.split(',').map((part) => {
    const id = Number(part.trim());
    if (!Number.isInteger(id) || id <= 0) {
      throw new Error(`${name} must be positive integer ids, got ${JSON.stringify(value)}`);
    }
    return id;
  });
}

/**
 * A prefix that makes user ids unique to this run, so repeated runs against one
 * deployment do not hit the per-user cap left behind by the previous run.
 */
export function runPrefix() {
  return env('USER_PREFIX', `k6-${Date.now().toString(36)}`);
}

/** The admin token: ADMIN_TOKEN, or minted from JWT_SECRET; null when neither is set. */
export function adminToken() {
  if (__ENV.ADMIN_TOKEN) {
    return __ENV.ADMIN_TOKEN;
  }
  if (__ENV.JWT_SECRET) {
    return mintToken(__ENV.JWT_SECRET, env('ADMIN_SUB', 'k6-admin'), 'admin', TOKEN_TTL_SECONDS);
  }
  return null;
}

/** The admin token of a script that creates its own sale; throws naming `script` when there is none. */
export function requiredAdminToken(script) {
  const admin = adminToken();
  if (!admin) {
    throw new Error(`${script} creates its own sale: set ADMIN_TOKEN or JWT_SECRET`);
  }
  return admin;
}

/**
 * Per-VU user tokens. With JWT_SECRET each VU mints tokens for its own users
 * (`<prefix>-<vu>-<n>`, USERS_PER_VU of them, rotating per iteration), so the
 * per-user cap applies as it would to real buyers. Without it, every request uses
 * USER_TOKEN (one user: the cap is hit after max_per_user tickets).
 */
export class UserTokens {
  constructor(prefix, usersPerVu) {
    this.prefix = prefix;
    this.usersPerVu = Math.max(1, usersPerVu);
    this.cache = [];
    if (!__ENV.JWT_SECRET && !__ENV.USER_TOKEN) {
      throw new Error('set USER_TOKEN, or JWT_SECRET to mint one token per virtual user');
    }
  }

  /** The token for this VU's `iteration`-th request. */
  next(iteration) {
    if (!__ENV.JWT_SECRET) {
      return __ENV.USER_TOKEN;
    }
    const slot = iteration % this.usersPerVu;
    let token = this.cache[slot];
    if (token === undefined) {
      token = mintToken(__ENV.JWT_SECRET, `${this.prefix}-${__VU}-${slot}`, 'user', TOKEN_TTL_SECONDS);
      this.cache[slot] = token;
    }
    return token;
  }
}

/** JSON request parameters with a bearer token and a `name` tag for per-request metrics. */
export function params(token, name, extraHeaders) {
  const headers = Object.assign({ 'Content-Type': 'application/json' }, extraHeaders || {});
  if (token) {
    headers.Authorization = `Bearer ${token}`;
  }
  return { headers: headers, tags: { name: name } };
}

function mustStatus(response, expected, what) {
  if (response.status !== expected) {
    throw new Error(`${what}: expected ${expected}, got ${response.status}: ${String(response.body).slice(0, 300)}`);
  }
  return response.json();
}

/**
 * Creates an event (sale open now) and `categories` categories with `quota` and
 * `maxPerUser` each (seated ones when `seatMap`, `[{row, seats}, ...]`, is given instead
 * of `quota`). Returns {eventId, categoryIds}.
 */
export function createSale(admin, { name, quota, maxPerUser, categories, price, seatMap }) {
  const startsAt = new Date(Date.now() + 30 * 24 * 3600 * 1000).toISOString();
  const event = mustStatus(
    http.post(
      `${BASE_URL}/events`,
      JSON.stringify({ name: name, venue: 'k6 arena', starts_at: startsAt, sale_starts_at: null, sale_ends_at: null }),
      params(admin, 'setup'),
    ),
    201,
    'POST /events',
  );
  const categoryIds = [];
  for (let index = 0; index < (categories || 1); index++) {
    const category = mustStatus(
      http.post(
        `${BASE_URL}/events/${event.id}/ticket-category`,
        JSON.stringify(
          Object.assign(
            {
              name: `category-${index}`,
              price: price === undefined ? 150000 : price,
              currency: 'IDR',
              max_per_user: maxPerUser,
            },
            seatMap ? { seat_map: seatMap } : { quota: quota },
          ),
        ),
        params(admin, 'setup'),
      ),
      201,
      'POST /events/{id}/ticket-category',
    );
    categoryIds.push(category.id);
  }
  return { eventId: event.id, categoryIds: categoryIds };
}

/** GET /events/{id}/availability, parsed; throws on a non-200. */
export function availability(eventId) {
  return mustStatus(
    http.get(`${BASE_URL}/events/${eventId}/availability`, { tags: { name: 'availability' } }),
    200,
    `GET /events/${eventId}/availability`,
  );
}

/**
 * Teardown check of a one-category sale that must have sold out: the server's levels
 * give available + held + sold == quota, held + sold == `quota` (no oversell, no
 * undersell), available == 0 and no negative level. True when all hold.
 */
export function soldOutExactly(sale, quota) {
  const level = availability(sale.eventId).categories.find((category) => category.category_id === sale.categoryIds[0]);
  const conserved = level && level.available + level.held + level.sold === level.quota;
  const sellsOut = level && level.available === 0 && level.held + level.sold === quota;
  const nonNegative = level && level.available >= 0 && level.held >= 0 && level.sold >= 0;
  console.log(`final availability: ${JSON.stringify(level)}`);
  return check(level, {
    'final: available + held + sold == quota': () => conserved,
    'final: held + sold == QUOTA and available == 0 (no oversell, no undersell)': () => sellsOut,
    'final: no level is negative': () => nonNegative,
  });
}

/**
 * The sale a script runs against: CATEGORY_ID (comma-separated list allowed) and/or
 * EVENT_ID from the environment; with only EVENT_ID, every category of the event;
 * with neither, a new sale created with ADMIN_TOKEN or JWT_SECRET.
 */
export function resolveSale(defaults) {
  const eventId = intEnv('EVENT_ID', 0);
  let categoryIds = idListEnv('CATEGORY_ID');
  if (categoryIds.length > 0 || eventId > 0) {
    if (categoryIds.length === 0) {
      categoryIds = availability(eventId).categories.map((category) => category.category_id);
      if (categoryIds.length === 0) {
        throw new Error(`event ${eventId} has no ticket categories`);
      }
    }
    return { eventId: eventId > 0 ? eventId : null, categoryIds: categoryIds, created: false };
  }
  const admin = adminToken();
  if (!admin) {
    throw new Error('set EVENT_ID and/or CATEGORY_ID, or ADMIN_TOKEN / JWT_SECRET so setup() can create a sale');
  }
  const sale = createSale(admin, {
    name: defaults.name,
    quota: intEnv('QUOTA', defaults.quota),
    maxPerUser: intEnv('MAX_PER_USER', defaults.maxPerUser),
    categories: intEnv('CATEGORIES', defaults.categories || 1),
  });
  return { eventId: sale.eventId, categoryIds: sale.categoryIds, created: true };
}

/** The `code` of a problem+json body, or '' when the body is not one. */
export function problemCode(response) {
  const body = response.body;
  if (typeof body !== 'string') {
    return '';
  }
  const match = body.match(/"code"\s*:\s*"([a-z_]+)"/);
  return match ? match[1] : '';
}

/**
 * The outcome of one POST /reserve: 'held' (201), 'sold_out' or 'limit_exceeded'
 * (409 with that code), or 'other' for anything else.
 */
export function reserveOutcome(response) {
  if (response.status === 201) {
    return 'held';
  }
  if (response.status === 409) {
    const code = problemCode(response);
    if (code === 'sold_out' || code === 'limit_exceeded') {
      return code;
    }
  }
  return 'other';
}

/** The reserve request body. */
export function reserveBody(sale, iteration, quantity) {
  const categoryId = sale.categoryIds[iteration % sale.categoryIds.length];
  const body = { category_id: categoryId, quantity: quantity };
  if (sale.eventId) {
    body.event_id = sale.eventId;
  }
  return JSON.stringify(body);
}

function metricValue(data, name, field) {
  const metric = data.metrics[name];
  return metric && metric.values[field] !== undefined ? metric.values[field] : 0;
}

function format(value) {
  return typeof value === 'number' ? (Number.isInteger(value) ? String(value) : value.toFixed(2)) : String(value);
}

/**
 * A compact text summary: the given counters, request rate, latency percentiles of
 * each of `trendMetrics`, dropped iterations and each threshold's verdict. Returns
 * handleSummary's output map (stdout, plus SUMMARY_JSON when set).
 */
export function summarize(data, title, counters, trendMetrics) {
  const lines = [`\n== ${title} ==`];
  for (const name of counters) {
    lines.push(`  ${name.padEnd(32)} ${format(metricValue(data, name, 'count'))}`);
  }
  lines.push(`  ${'http_reqs/s'.padEnd(32)} ${format(metricValue(data, 'http_reqs', 'rate'))}`);
  lines.push(`  ${'dropped_iterations'.padEnd(32)} ${format(metricValue(data, 'dropped_iterations', 'count'))}`);
  for (const name of [].concat(trendMetrics)) {
    const trend = data.metrics[name];
    if (trend) {
      const stats = ['avg', 'med', 'p(90)', 'p(95)', 'p(99)', 'max']
        .filter((stat) => trend.values[stat] !== undefined)
        .map((stat) => `${stat}=${format(trend.values[stat])}ms`);
      lines.push(`  ${name}\n    ${stats.join(' ')}`);
    }
  }
  let failed = 0;
  for (const [name, metric] of Object.entries(data.metrics)) {
    for (const [expression, verdict] of Object.entries(metric.thresholds || {})) {
      if (!verdict.ok) {
        failed += 1;
      }
      lines.push(`  threshold ${verdict.ok ? 'ok    ' : 'FAILED'} ${name}: ${expression}`);
    }
  }
  lines.push(failed === 0 ? '  all thresholds passed' : `  ${failed} threshold(s) FAILED`);
  const output = { stdout: `${lines.join('\n')}\n` };
  if (__ENV.SUMMARY_JSON) {
    output[__ENV.SUMMARY_JSON] = JSON.stringify(data, null, 2);
  }
  return output;
}

/** summaryTrendStats that the summaries above read. */
export const TREND_STATS = ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'p(99.9)', 'max'];
