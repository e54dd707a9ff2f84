// POST /reserve at a constant arrival rate.
//
// Outcomes are counted honestly: 201 `held` is a success; 409 `sold_out` and
// 409 `limit_exceeded` are expected answers of a flash sale, counted in their own
// counters and not as failures; anything else (5xx, 503 shed, 401, 422, a 409 with
// another code, a timeout) is a failure and feeds the `reserve_failed` rate.
//
//   BASE_URL=http://127.0.0.1:8080 JWT_SECRET=... EVENT_ID=1 \
//   RATE=500 DURATION=30s PRE_VUS=50 MAX_VUS=500 k6 run k6/reserve.js
//
// See k6/README.md for every variable.
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate } from 'k6/metrics';
import {
  BASE_URL,
  TREND_STATS,
  UserTokens,
  env,
  intEnv,
  numberEnv,
  params,
  reserveBody,
  reserveOutcome,
  resolveSale,
  runPrefix,
  summarize,
} from './lib/stampede.js';

const held = new Counter('reserve_held');
const soldOut = new Counter('reserve_sold_out');
const limitExceeded = new Counter('reserve_limit_exceeded');
const other = new Counter('reserve_other');
const failed = new Rate('reserve_failed');

const QUANTITY = intEnv('QUANTITY', 1);
const USERS_PER_VU = intEnv('USERS_PER_VU', 1);

export const options = {
  scenarios: {
    reserve: {
      executor: 'constant-arrival-rate',
      rate: intEnv('RATE', 200),
      timeUnit: '1s',
      duration: env('DURATION', '30s'),
      preAllocatedVUs: intEnv('PRE_VUS', 50),
      maxVUs: intEnv('MAX_VUS', 500),
    },
  },
  thresholds: {
    'http_req_duration{name:reserve}': [`p(95)<${numberEnv('P95_MS', 25)}`, `p(99)<${numberEnv('P99_MS', 50)}`],
    reserve_failed: [`rate<=${numberEnv('FAILED_RATE_MAX', 0.001)}`],
  },
  summaryTrendStats: TREND_STATS,
  setupTimeout: '60s',
};

// Only 201 is a successful HTTP exchange for http_req_failed; the 409 outcomes
// are tracked by the counters above and the `reserve_failed` rate decides.
http.setResponseCallback(http.expectedStatuses(201, 409));

export function setup() {
  const sale = resolveSale({ name: 'k6 reserve', quota: 10000000, maxPerUser: 10000000 });
  console.log(`reserving against ${BASE_URL}: event ${sale.eventId} categories ${sale.categoryIds.join(',')}`);
  return Object.assign(sale, { prefix: runPrefix() });
}

let tokens;

export default function (sale) {
  tokens = tokens || new UserTokens(sale.prefix, USERS_PER_VU);
  const iteration = exec.vu.iterationInScenario;
  const response = http.post(
    `${BASE_URL}/reserve`,
    reserveBody(sale, iteration, QUANTITY),
    params(tokens.next(iteration), 'reserve'),
  );
  const outcome = reserveOutcome(response);
  if (outcome === 'held') {
    held.add(1);
  } else if (outcome === 'sold_out') {
    soldOut.add(1);
  } else if (outcome === 'limit_exceeded') {
    limitExceeded.add(1);
  } else {
    other.add(1);
  }
  failed.add(outcome === 'other');
  check(response, {
    'reserve: 201 held, or 409 sold_out / limit_exceeded': () => outcome !== 'other',
    'reserve: a 201 is a hold of the asked quantity': (r) =>
      r.status !== 201 || (r.json('status') === 'held' && r.json('quantity') === QUANTITY),
  });
}

export function handleSummary(data) {
  return summarize(
    data,
    'POST /reserve',
    ['reserve_held', 'reserve_sold_out', 'reserve_limit_exceeded', 'reserve_other'],
    'http_req_duration{name:reserve}',
  );
}
