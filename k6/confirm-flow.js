// The buyer's whole path under load, at a constant arrival rate of journeys:
// POST /reserve, then POST /confirm with a payment token. DECLINE_RATIO of the
// journeys pay with `tok_decline` (402 payment_declined; the hold stays, so the
// buyer cancels it: POST /reservations/{id}/cancel -> 200 cancelled), the others
// with `tok_ok` (200 confirmed with confirmed_at and payment_id). REPEAT_RATIO of
// the confirmed ones confirm again and must get the same payment_id (charged once).
//
//   BASE_URL=http://127.0.0.1:8080 JWT_SECRET=... RATE=200 DURATION=30s k6 run k6/confirm-flow.js
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
  problemCode,
  reserveBody,
  reserveOutcome,
  resolveSale,
  runPrefix,
  summarize,
} from './lib/stampede.js';

const DECLINE_RATIO = numberEnv('DECLINE_RATIO', 0.1);
const REPEAT_RATIO = numberEnv('REPEAT_RATIO', 0.05);
const USERS_PER_VU = intEnv('USERS_PER_VU', 1);

const held = new Counter('flow_held');
const soldOut = new Counter('flow_sold_out');
const limitExceeded = new Counter('flow_limit_exceeded');
const confirmed = new Counter('flow_confirmed');
const declined = new Counter('flow_declined');
const cancelled = new Counter('flow_cancelled');
const other = new Counter('flow_other');
const failed = new Rate('flow_failed');

export const options = {
  scenarios: {
    journeys: {
      executor: 'constant-arrival-rate',
      rate: intEnv('RATE', 100),
      timeUnit: '1s',
      duration: env('DURATION', '30s'),
      preAllocatedVUs: intEnv('PRE_VUS', 50),
      maxVUs: intEnv('MAX_VUS', 500),
    },
  },
  thresholds: {
    'http_req_duration{name:reserve}': [`p(95)<${numberEnv('P95_MS', 25)}`, `p(99)<${numberEnv('P99_MS', 50)}`],
    'http_req_duration{name:confirm}': [`p(95)<${numberEnv('CONFIRM_P95_MS', 50)}`],
    flow_failed: [`rate<=${numberEnv('FAILED_RATE_MAX', 0.001)}`],
  },
  summaryTrendStats: TREND_STATS,
  setupTimeout: '60s',
};

http.setResponseCallback(http.expectedStatuses(200, 201, 402, 409));

export function setup() {
  const sale = resolveSale({ name: 'k6 confirm flow', quota: 10000000, maxPerUser: 10000000 });
  console.log(`confirm flow against ${BASE_URL}: event ${sale.eventId} categories ${sale.categoryIds.join(',')}`);
  return Object.assign(sale, { prefix: runPrefix() });
}

let tokens;

function fail(step, response) {
  other.add(1);
  failed.add(true);
  console.warn(`${step}: unexpected ${response.status}: ${String(response.body).slice(0, 200)}`);
}

function confirm(token, reservationId, paymentToken) {
  return http.post(
    `${BASE_URL}/confirm`,
    JSON.stringify({ reservation_id: reservationId, payment: { token: paymentToken } }),
    params(token, 'confirm'),
  );
}

function declineAndCancel(token, reservation) {
  const declinedResponse = confirm(token, reservation.id, 'tok_decline');
  const declinedOk = check(declinedResponse, {
    'confirm tok_decline: 402 payment_declined': (r) => r.status === 402 && problemCode(r) === 'payment_declined',
  });
  if (!declinedOk) {
    return fail('confirm tok_decline', declinedResponse);
  }
  declined.add(1);
  const cancelResponse = http.post(`${BASE_URL}/reservations/${reservation.id}/cancel`, null, params(token, 'cancel'));
  const cancelOk = check(cancelResponse, {
    'cancel after decline: 200 cancelled': (r) => r.status === 200 && r.json('status') === 'cancelled',
  });
  if (!cancelOk) {
    return fail('cancel', cancelResponse);
  }
  cancelled.add(1);
  failed.add(false);
}

function payAndMaybeRepeat(token, reservation) {
  const response = confirm(token, reservation.id, 'tok_ok');
  const ok = check(response, {
    'confirm tok_ok: 200 confirmed with payment_id and confirmed_at': (r) =>
      r.status === 200 && r.json('status') === 'confirmed' && !!r.json('payment_id') && !!r.json('confirmed_at'),
    'confirm: amount = price * quantity of the hold': (r) => r.status !== 200 || r.json('amount') === reservation.amount,
  });
  if (!ok) {
    return fail('confirm tok_ok', response);
  }
  confirmed.add(1);
  if (Math.random() < REPEAT_RATIO) {
    const again = confirm(token, reservation.id, 'tok_ok');
    const same = check(again, {
      'confirm again: 200 with the same payment_id': (r) =>
        r.status === 200 && r.json('payment_id') === response.json('payment_id'),
    });
    if (!same) {
      return fail('confirm again', again);
    }
  }
  failed.add(false);
}

export default function (sale) {
  tokens = tokens || new UserTokens(sale.prefix, USERS_PER_VU);
  const iteration = exec.vu.iterationInScenario;
  const token = tokens.next(iteration);
  const response = http.post(`${BASE_URL}/reserve`, reserveBody(sale, iteration, 1), params(token, 'reserve'));
  const outcome = reserveOutcome(response);
  check(response, { 'reserve: 201 held, or 409 sold_out / limit_exceeded': () => outcome !== 'other' });
  if (outcome === 'sold_out') {
    soldOut.add(1);
    return failed.add(false);
  }
  if (outcome === 'limit_exceeded') {
    limitExceeded.add(1);
    return failed.add(false);
  }
  if (outcome === 'other') {
    return fail('reserve', response);
  }
  held.add(1);
  const reservation = response.json();
  if (Math.random() < DECLINE_RATIO) {
    declineAndCancel(token, reservation);
  } else {
    payAndMaybeRepeat(token, reservation);
  }
}

export function handleSummary(data) {
  return summarize(
    data,
    'reserve -> confirm',
    [
      'flow_held',
      'flow_confirmed',
      'flow_declined',
      'flow_cancelled',
      'flow_sold_out',
      'flow_limit_exceeded',
      'flow_other',
    ],
    ['http_req_duration{name:reserve}', 'http_req_duration{name:confirm}'],
  );
}
