// The read-heavy scenario: GET /events/{id}/availability at a constant arrival
// rate. Every answer must be 200 and every category in it conserved
// (available + held + sold == quota, none negative), also while other scripts sell.
//
//   BASE_URL=http://127.0.0.1:8080 EVENT_ID=1 RATE=2000 DURATION=30s k6 run k6/availability.js
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate } from 'k6/metrics';
import { BASE_URL, TREND_STATS, env, idListEnv, intEnv, numberEnv, resolveSale, summarize } from './lib/stampede.js';

const violations = new Counter('availability_not_conserved');
const failed = new Rate('availability_failed');

export const options = {
  scenarios: {
    readers: {
      executor: 'constant-arrival-rate',
      rate: intEnv('RATE', 1000),
      timeUnit: '1s',
      duration: env('DURATION', '30s'),
      preAllocatedVUs: intEnv('PRE_VUS', 50),
      maxVUs: intEnv('MAX_VUS', 500),
    },
  },
  thresholds: {
    'http_req_duration{name:availability}': [
      `p(95)<${numberEnv('P95_MS', 25)}`,
      `p(99)<${numberEnv('P99_MS', 50)}`,
    ],
    availability_failed: [`rate<=${numberEnv('FAILED_RATE_MAX', 0.001)}`],
    availability_not_conserved: ['count==0'],
  },
  summaryTrendStats: TREND_STATS,
  setupTimeout: '60s',
};

export function setup() {
  // EVENT_ID (comma-separated for several events), or a new event when absent.
  const events = idListEnv('EVENT_ID');
  if (events.length > 0) {
    return { eventIds: events };
  }
  const sale = resolveSale({ name: 'k6 availability', quota: 1000, maxPerUser: 10, categories: 3 });
  return { eventIds: [sale.eventId] };
}

function conserved(body) {
  return body.categories.every(
    (c) => c.available >= 0 && c.held >= 0 && c.sold >= 0 && c.available + c.held + c.sold === c.quota,
  );
}

export default function (data) {
  const eventId = data.eventIds[exec.scenario.iterationInTest % data.eventIds.length];
  const response = http.get(`${BASE_URL}/events/${eventId}/availability`, { tags: { name: 'availability' } });
  const ok = response.status === 200;
  failed.add(!ok);
  let isConserved = false;
  if (ok) {
    const body = response.json();
    isConserved = body.event_id === eventId && conserved(body);
    if (!isConserved) {
      violations.add(1);
      console.error(`not conserved: ${response.body}`);
    }
  }
  check(response, {
    'availability: 200': () => ok,
    'availability: every category conserved': () => isConserved,
  });
}

export function handleSummary(data) {
  return summarize(
    data,
    'GET /events/{id}/availability',
    ['http_reqs', 'availability_not_conserved'],
    'http_req_duration{name:availability}',
  );
}
