// A flash sale: a spike of VUS distinct buyers, all released at once, each trying
// ATTEMPTS times to reserve one ticket from a small QUOTA.
//
// The run fails unless
// - exactly QUOTA reserves answered 201 (no oversell, no undersell),
// - every other answer was 409 sold_out or limit_exceeded (no 5xx, no shed), and
// - teardown reads GET /events/{id}/availability and finds held + sold == QUOTA,
//   available == 0, no negative level (the server agrees with the clients).
//
// It creates its own event and category (ADMIN_TOKEN or JWT_SECRET), so the quota
// is known; users are minted from JWT_SECRET (one per VU), or all share USER_TOKEN
// (then set MAX_PER_USER >= QUOTA).
//
//   BASE_URL=http://127.0.0.1:8080 JWT_SECRET=... QUOTA=100 VUS=1000 k6 run k6/flash-sale.js
import http from 'k6/http';
import { check } from 'k6';
import { Counter, Rate } from 'k6/metrics';
import {
  BASE_URL,
  TREND_STATS,
  UserTokens,
  createSale,
  intEnv,
  numberEnv,
  params,
  reserveBody,
  requiredAdminToken,
  reserveOutcome,
  runPrefix,
  soldOutExactly,
  summarize,
} from './lib/stampede.js';

const QUOTA = intEnv('QUOTA', 100);
const VUS = intEnv('VUS', 1000);
const ATTEMPTS = intEnv('ATTEMPTS', 1);
const MAX_PER_USER = intEnv('MAX_PER_USER', __ENV.JWT_SECRET ? 1 : QUOTA);

if (VUS * ATTEMPTS <= QUOTA) {
  throw new Error(`a flash sale needs more demand than supply: VUS*ATTEMPTS (${VUS * ATTEMPTS}) <= QUOTA (${QUOTA})`);
}

const held = new Counter('flash_held');
const soldOut = new Counter('flash_sold_out');
const limitExceeded = new Counter('flash_limit_exceeded');
const other = new Counter('flash_other');
const failed = new Rate('flash_failed');
const mismatches = new Counter('flash_final_mismatch');

export const options = {
  scenarios: {
    spike: {
      executor: 'per-vu-iterations',
      vus: VUS,
      iterations: ATTEMPTS,
      maxDuration: __ENV.MAX_DURATION || '60s',
    },
  },
  thresholds: {
    // Successes must equal the quota exactly: more is oversell, fewer is undersell.
    flash_held: [`count==${QUOTA}`],
    flash_failed: ['rate==0'],
    // Set by teardown when the server's levels disagree.
    flash_final_mismatch: ['count==0'],
    'http_req_duration{name:reserve}': [`p(99)<${numberEnv('P99_MS', 1000)}`],
  },
  summaryTrendStats: TREND_STATS,
  setupTimeout: '60s',
  teardownTimeout: '60s',
};

http.setResponseCallback(http.expectedStatuses(201, 409));

export function setup() {
  const admin = requiredAdminToken('flash-sale.js');
  const sale = createSale(admin, { name: 'k6 flash sale', quota: QUOTA, maxPerUser: MAX_PER_USER, categories: 1 });
  console.log(`flash sale on ${BASE_URL}: event ${sale.eventId} category ${sale.categoryIds[0]}, quota ${QUOTA}, ` +
    `${VUS} buyers x ${ATTEMPTS} attempt(s), max_per_user ${MAX_PER_USER}`);
  return Object.assign(sale, { prefix: runPrefix() });
}

let tokens;

export default function (sale) {
  tokens = tokens || new UserTokens(sale.prefix, 1);
  const response = http.post(`${BASE_URL}/reserve`, reserveBody(sale, 0, 1), params(tokens.next(0), 'reserve'));
  const outcome = reserveOutcome(response);
  if (outcome === 'held') {
    held.add(1);
  } else if (outcome === 'sold_out') {
    soldOut.add(1);
  } else if (outcome === 'limit_exceeded') {
    limitExceeded.add(1);
  } else {
    other.add(1);
    console.warn(`unexpected answer ${response.status}: ${String(response.body).slice(0, 200)}`);
  }
  failed.add(outcome === 'other');
  check(response, { 'flash: 201 held, or 409 sold_out / limit_exceeded': () => outcome !== 'other' });
}

export function teardown(sale) {
  mismatches.add(soldOutExactly(sale, QUOTA) ? 0 : 1);
}

export function handleSummary(data) {
  return summarize(
    data,
    `flash sale: quota ${QUOTA}, ${VUS} buyers x ${ATTEMPTS}`,
    ['flash_held', 'flash_sold_out', 'flash_limit_exceeded', 'flash_other', 'flash_final_mismatch'],
    'http_req_duration{name:reserve}',
  );
}
