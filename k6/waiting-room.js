// A waiting room under a crowd: VUS users (thousands) join an event's queue before the
// sale opens, poll honouring Retry-After, and reserve one ticket with their pass once
// admitted; a small QUOTA sells out long before the queue is through.
//
// The run fails unless
// - every reserve without a pass answers 403 queue_pass_required;
// - admission follows queue order: when a user first reads `admitted`, the room's
//   `admitted` count is at least the user's place in the queue (position + admitted
//   count before its last waiting poll), so nobody was admitted while someone ahead of
//   them waited; and no user's position ever grows;
// - exactly QUOTA reserves with a pass answer 201 and the rest 409 sold_out, and teardown
//   reads `held + sold == QUOTA`, `available == 0` from GET /events/{id}/availability;
// - every user ends admitted or sold_out before MAX_WAIT_SECONDS.
//
// It creates its own event (sale opening OPEN_IN_SECONDS after setup), category and
// room (ADMIT_PER_SECOND), so it needs ADMIN_TOKEN or JWT_SECRET; users are minted from
// JWT_SECRET, one per VU.
//
//   BASE_URL=http://127.0.0.1:8080 JWT_SECRET=... VUS=5000 QUOTA=500 ADMIT_PER_SECOND=200 \
//     k6 run k6/waiting-room.js
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { mintToken } from './lib/jwt.js';
import {
  BASE_URL,
  TREND_STATS,
  adminToken,
  availability,
  intEnv,
  numberEnv,
  params,
  problemCode,
  runPrefix,
  summarize,
} from './lib/stampede.js';

const VUS = intEnv('VUS', 2000);
const QUOTA = intEnv('QUOTA', 200);
const ADMIT_PER_SECOND = intEnv('ADMIT_PER_SECOND', 200);
const PASS_TTL_SECONDS = 600;
const OPEN_IN_SECONDS = intEnv('OPEN_IN_SECONDS', 20);
// Users arrive over this many seconds after setup (before the opening), not in one instant.
const JOIN_SPREAD_SECONDS = numberEnv('JOIN_SPREAD_SECONDS', OPEN_IN_SECONDS / 2);
// A 503 (load shed, Redis slow) is retried after Retry-After, as a real client would.
const RETRIES_MAX = intEnv('RETRIES_MAX', 5);
const MAX_WAIT_SECONDS = intEnv('MAX_WAIT_SECONDS', OPEN_IN_SECONDS + Math.ceil(VUS / ADMIT_PER_SECOND) + 90);

if (!__ENV.JWT_SECRET) {
  throw new Error('waiting-room.js mints one user per VU: set JWT_SECRET');
}

const admitted = new Counter('room_admitted');
const soldOutWhileWaiting = new Counter('room_sold_out');
const held = new Counter('room_held');
const reserveSoldOut = new Counter('room_reserve_sold_out');
const passRefusals = new Counter('room_no_pass_refused');
const orderViolations = new Counter('room_order_violations');
const failures = new Counter('room_failures');
const polls = new Counter('room_polls');
const retries = new Counter('room_retries_after_503');
const joinToAdmission = new Trend('room_join_to_admission', true);
const mismatches = new Counter('room_final_mismatch');

export const options = {
  scenarios: {
    crowd: {
      executor: 'per-vu-iterations',
      vus: VUS,
      iterations: 1,
      maxDuration: `${MAX_WAIT_SECONDS + 30}s`,
    },
  },
  thresholds: {
    room_held: [`count==${QUOTA}`],
    room_order_violations: ['count==0'],
    room_failures: ['count==0'],
    room_no_pass_refused: [`count==${VUS}`],
    room_final_mismatch: ['count==0'],
  },
  summaryTrendStats: TREND_STATS,
  setupTimeout: '60s',
  teardownTimeout: '60s',
};

http.setResponseCallback(http.expectedStatuses(200, 201, 403, 409));

/** Sends `request()` again after Retry-After while it answers 503, at most RETRIES_MAX times. */
function withRetries(request) {
  let response = request();
  for (let attempt = 0; response.status === 503 && attempt < RETRIES_MAX; attempt++) {
    retries.add(1);
    sleep(retryAfter(response) * (0.5 + Math.random()));
    response = request();
  }
  return response;
}

function mustJson(response, expected, what) {
  if (!expected.includes(response.status)) {
    throw new Error(`${what}: got ${response.status}: ${String(response.body).slice(0, 300)}`);
  }
  return response.json();
}

export function setup() {
  const admin = adminToken();
  const opensAt = new Date(Date.now() + OPEN_IN_SECONDS * 1000);
  const event = mustJson(
    http.post(
      `${BASE_URL}/events`,
      JSON.stringify({
        name: 'k6 waiting room',
        venue: 'k6 arena',
        starts_at: new Date(Date.now() + 30 * 24 * 3600 * 1000).toISOString(),
        sale_starts_at: opensAt.toISOString(),
        sale_ends_at: null,
      }),
      params(admin, 'setup'),
    ),
    [201],
    'POST /events',
  );
  const category = mustJson(
    http.post(
      `${BASE_URL}/events/${event.id}/ticket-category`,
      JSON.stringify({ name: 'general', price: 1000, currency: 'USD', quota: QUOTA, max_per_user: 1 }),
      params(admin, 'setup'),
    ),
    [201],
    'POST /events/{id}/ticket-category',
  );
  const room = JSON.stringify({ enabled: true, admit_per_second: ADMIT_PER_SECOND, pass_ttl_seconds: PASS_TTL_SECONDS });
  const request = params(admin, 'setup');
  mustJson(http.put(`${BASE_URL}/events/${event.id}/waiting-room`, room, request), [200], 'PUT waiting-room');
  console.log(`waiting room on ${BASE_URL}: event ${event.id}, category ${category.id}, quota ${QUOTA}, ` +
    `${VUS} users, ${ADMIT_PER_SECOND}/s, opening at ${opensAt.toISOString()}`);
  // Other replicas learn that the room is on within WAITING_ROOM_REFRESH_INTERVAL (500 ms).
  sleep(1);
  return { eventId: event.id, categoryId: category.id, prefix: runPrefix() };
}

/** The room's `admitted` count now. */
function roomAdmitted(sale) {
  const url = `${BASE_URL}/events/${sale.eventId}/waiting-room`;
  const response = withRetries(() => http.get(url, { tags: { name: 'room' } }));
  return mustJson(response, [200], 'GET waiting-room').admitted;
}

function reserve(sale, token, pass) {
  const headers = pass ? { 'Queue-Pass': pass } : {};
  const body = JSON.stringify({ category_id: sale.categoryId, quantity: 1 });
  const request = params(token, pass ? 'reserve' : 'reserve_without_pass', headers);
  return withRetries(() => http.post(`${BASE_URL}/reserve`, body, request));
}

/** Seconds to sleep before the next poll: the server's Retry-After (at least 0.2 s). */
function retryAfter(response) {
  const value = Number(response.headers['Retry-After']);
  return Number.isFinite(value) && value > 0 ? value : 1;
}

/** Polls until admitted or sold out; returns the final QueueStatus, or null on a deadline. */
function waitForTurn(sale, token, joined) {
  const queueUrl = `${BASE_URL}/events/${sale.eventId}/queue`;
  let response = joined;
  let status = joined.json();
  let place = 0;
  let lastPosition = Infinity;
  const deadline = Date.now() + MAX_WAIT_SECONDS * 1000;
  while (status.status === 'waiting' && Date.now() < deadline) {
    sleep(retryAfter(response) * (0.8 + 0.4 * Math.random()));
    const before = roomAdmitted(sale);
    response = withRetries(() => http.get(queueUrl, params(token, 'poll')));
    polls.add(1);
    status = mustJson(response, [200], 'GET queue');
    if (status.status === 'waiting' && status.position !== null) {
      if (status.position > lastPosition) {
        orderViolations.add(1);
        console.warn(`position grew from ${lastPosition} to ${status.position}`);
      }
      lastPosition = status.position;
      place = Math.max(place, status.position + before);
    }
  }
  if (status.status === 'admitted' && place > 0) {
    const after = roomAdmitted(sale);
    if (after < place) {
      orderViolations.add(1);
      console.warn(`admitted at place ${place} while the room had admitted only ${after}`);
    }
  }
  return status.status === 'waiting' ? null : status;
}

export default function (sale) {
  const token = mintToken(__ENV.JWT_SECRET, `${sale.prefix}-${__VU}`, 'user', 3 * 3600);
  sleep(Math.random() * JOIN_SPREAD_SECONDS);
  const queueUrl = `${BASE_URL}/events/${sale.eventId}/queue`;
  const joined = withRetries(() => http.post(queueUrl, null, params(token, 'join')));
  if (joined.status !== 201) {
    failures.add(1);
    console.warn(`join answered ${joined.status}: ${String(joined.body).slice(0, 200)}`);
    return;
  }
  const refused = reserve(sale, token, null);
  passRefusals.add(refused.status === 403 && problemCode(refused) === 'queue_pass_required' ? 1 : 0);
  const status = waitForTurn(sale, token, joined);
  if (status === null) {
    failures.add(1);
    console.warn('still waiting at the deadline');
    return;
  }
  if (status.status === 'sold_out') {
    soldOutWhileWaiting.add(1);
    return;
  }
  if (status.status !== 'admitted') {
    failures.add(1);
    console.warn(`unexpected status ${status.status}`);
    return;
  }
  admitted.add(1);
  joinToAdmission.add(Date.parse(status.pass_expires_at) - PASS_TTL_SECONDS * 1000 - Date.parse(status.joined_at));
  const response = reserve(sale, token, status.pass);
  const code = problemCode(response);
  if (response.status === 201) {
    held.add(1);
  } else if (response.status === 409 && code === 'sold_out') {
    reserveSoldOut.add(1);
  } else {
    failures.add(1);
    console.warn(`reserve with a pass answered ${response.status} ${code}`);
  }
  check(response, { 'reserve with a pass: 201 or 409 sold_out': () => response.status === 201 || code === 'sold_out' });
}

export function teardown(sale) {
  const level = availability(sale.eventId).categories.find((category) => category.category_id === sale.categoryId);
  console.log(`final availability: ${JSON.stringify(level)}`);
  const ok = check(level, {
    'final: available + held + sold == quota': () => level.available + level.held + level.sold === level.quota,
    'final: held + sold == QUOTA and available == 0': () => level.available === 0 && level.held + level.sold === QUOTA,
  });
  mismatches.add(ok ? 0 : 1);
}

export function handleSummary(data) {
  return summarize(
    data,
    `waiting room: ${VUS} users, quota ${QUOTA}, ${ADMIT_PER_SECOND}/s`,
    ['room_admitted', 'room_sold_out', 'room_held', 'room_reserve_sold_out', 'room_no_pass_refused',
      'room_order_violations', 'room_failures', 'room_polls', 'room_retries_after_503', 'room_final_mismatch'],
    'room_join_to_admission',
  );
}
