// The stampede: BUYERS distinct buyers (100,000 by default) against ONE category of
// QUOTA seats (5,000), each buyer sending exactly one reserve of one ticket, as fast as
// VUS virtual users can send them (shared iterations: a VU takes the next buyer as
// soon as its previous answer arrived).
//
// The run fails unless
// - exactly QUOTA reserves answered 201 and BUYERS - QUOTA answered 409 sold_out,
//   nothing else (no 5xx, no shed, no limit_exceeded: every buyer is a new user), and
// - teardown reads GET /events/{id}/availability and finds held + sold == QUOTA,
//   available == 0, available + held + sold == quota.
//
// It creates its own event and category (ADMIN_TOKEN or JWT_SECRET) and mints one
// token per buyer from JWT_SECRET (required).
//
//   BASE_URL=http://127.0.0.1:8080 JWT_SECRET=... k6 run k6/stampede.js
//   BUYERS=20000 QUOTA=1000 VUS=200 k6 run k6/stampede.js
//
// k6 spends far more CPU per request than the api; on a small machine shared with the
// server it measures k6 more than the server. scripts/bench runs the same stampede
// with a lean load client (examples/stampede_load.rs) for its figures.
import http from 'k6/http';
import exec from 'k6/execution';
import { check } from 'k6';
import { Counter, Rate } from 'k6/metrics';
import { mintToken } from './lib/jwt.js';
import {
  BASE_URL,
  TREND_STATS,
  adminToken,
  createSale,
  intEnv,
  numberEnv,
  params,
  reserveOutcome,
  runPrefix,
  soldOutExactly,
  summarize,
} from './lib/stampede.js';

const BUYERS = intEnv('BUYERS', 100000);
const QUOTA = intEnv('QUOTA', 5000);
const VUS = intEnv('VUS', 256);
const TOKEN_TTL_SECONDS = 3 * 3600;

if (BUYERS <= QUOTA) {
  throw new Error(`a stampede needs more buyers than seats: BUYERS (${BUYERS}) <= QUOTA (${QUOTA})`);
}
if (!__ENV.JWT_SECRET) {
  throw new Error('stampede.js mints one token per buyer: set JWT_SECRET');
}

const held = new Counter('stampede_held');
const soldOut = new Counter('stampede_sold_out');
const other = new Counter('stampede_other');
const failed = new Rate('stampede_failed');
const mismatches = new Counter('stampede_final_mismatch');

export const options = {
  scenarios: {
    stampede: {
      executor: 'shared-iterations',
      vus: VUS,
      iterations: BUYERS,
      maxDuration: __ENV.MAX_DURATION || '10m',
    },
  },
  thresholds: {
    stampede_held: [`count==${QUOTA}`],
    stampede_sold_out: [`count==${BUYERS - QUOTA}`],
    stampede_failed: ['rate==0'],
    // Set by teardown when the server's levels disagree.
    stampede_final_mismatch: ['count==0'],
    'http_req_duration{name:reserve}': [`p(99)<${numberEnv('P99_MS', 1000)}`],
  },
  summaryTrendStats: TREND_STATS,
  setupTimeout: '60s',
  teardownTimeout: '60s',
};

http.setResponseCallback(http.expectedStatuses(201, 409));

export function setup() {
  const admin = adminToken();
  // One ticket per buyer is the cap, so a buyer can never hold two.
  const sale = createSale(admin, { name: 'k6 stampede', quota: QUOTA, maxPerUser: 1, categories: 1 });
  console.log(`stampede on ${BASE_URL}: event ${sale.eventId} category ${sale.categoryIds[0]}, ${QUOTA} seats, ` +
    `${BUYERS} buyers over ${VUS} VUs`);
  return Object.assign(sale, { prefix: runPrefix() });
}

export default function (sale) {
  // iterationInTest numbers the buyers 0..BUYERS-1 across all VUs: one user each.
  const buyer = exec.scenario.iterationInTest;
  const token = mintToken(__ENV.JWT_SECRET, `${sale.prefix}-buyer-${buyer}`, 'user', TOKEN_TTL_SECONDS);
  const body = JSON.stringify({ category_id: sale.categoryIds[0], quantity: 1 });
  const response = http.post(`${BASE_URL}/reserve`, body, params(token, 'reserve'));
  const outcome = reserveOutcome(response);
  if (outcome === 'held') {
    held.add(1);
  } else if (outcome === 'sold_out') {
    soldOut.add(1);
  } else {
    other.add(1);
    console.warn(`unexpected answer ${response.status}: ${String(response.body).slice(0, 200)}`);
  }
  failed.add(outcome !== 'held' && outcome !== 'sold_out');
  check(response, { 'stampede: 201 held or 409 sold_out': () => outcome === 'held' || outcome === 'sold_out' });
}

export function teardown(sale) {
  mismatches.add(soldOutExactly(sale, QUOTA) ? 0 : 1);
}

export function handleSummary(data) {
  return summarize(
    data,
    `stampede: ${BUYERS} buyers, ${QUOTA} seats`,
    ['stampede_held', 'stampede_sold_out', 'stampede_other', 'stampede_final_mismatch'],
    'http_req_duration{name:reserve}',
  );
}
