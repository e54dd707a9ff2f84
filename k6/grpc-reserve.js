// A flash sale over gRPC: VUS distinct buyers, all released at once, each calling
// stampede.v1.Stampede/Reserve for one ticket of a small QUOTA, against the proto
// (proto/stampede/v1/stampede.proto; the api needs GRPC_LISTEN_ADDR).
//
// The run fails unless
// - exactly QUOTA calls answered OK (no oversell, no undersell),
// - every other answer was FAILED_PRECONDITION with the ErrorInfo reason sold_out or
//   limit_exceeded (no UNAVAILABLE, no shed), and
// - teardown reads GetAvailability over gRPC and finds held + sold == QUOTA, available == 0.
//
// The sale itself is created over HTTP (ADMIN_TOKEN or JWT_SECRET, as the other scripts);
// buyers are minted from JWT_SECRET (one per VU), or all share USER_TOKEN.
//
//   BASE_URL=http://127.0.0.1:8080 GRPC_ADDR=127.0.0.1:9090 JWT_SECRET=... QUOTA=100 VUS=1000 \
//     k6 run k6/grpc-reserve.js
import grpc from 'k6/net/grpc';
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import {
  BASE_URL,
  TREND_STATS,
  UserTokens,
  createSale,
  intEnv,
  requiredAdminToken,
  runPrefix,
  summarize,
} from './lib/stampede.js';

const GRPC_ADDR = __ENV.GRPC_ADDR || '127.0.0.1:9090';
const QUOTA = intEnv('QUOTA', 100);
const VUS = intEnv('VUS', 1000);
const MAX_PER_USER = intEnv('MAX_PER_USER', __ENV.JWT_SECRET ? 1 : QUOTA);

if (VUS <= QUOTA) {
  throw new Error(`a flash sale needs more buyers than tickets: VUS (${VUS}) <= QUOTA (${QUOTA})`);
}

const held = new Counter('grpc_held');
const soldOut = new Counter('grpc_sold_out');
const other = new Counter('grpc_other');
const failed = new Rate('grpc_failed');
const mismatches = new Counter('grpc_final_mismatch');
const latency = new Trend('grpc_reserve_duration', true);

export const options = {
  scenarios: {
    spike: { executor: 'per-vu-iterations', vus: VUS, iterations: 1, maxDuration: __ENV.MAX_DURATION || '60s' },
  },
  thresholds: {
    // Successes must equal the quota exactly: more is oversell, fewer is undersell.
    grpc_held: [`count==${QUOTA}`],
    grpc_failed: ['rate==0'],
    grpc_final_mismatch: ['count==0'],
  },
  summaryTrendStats: TREND_STATS,
  setupTimeout: '60s',
  teardownTimeout: '60s',
};

const client = new grpc.Client();
client.load(['../proto'], 'stampede/v1/stampede.proto');

export function setup() {
  const admin = requiredAdminToken('grpc-reserve.js');
  const sale = createSale(admin, { name: 'k6 grpc sale', quota: QUOTA, maxPerUser: MAX_PER_USER, categories: 1 });
  console.log(`gRPC flash sale on ${GRPC_ADDR} (catalog via ${BASE_URL}): event ${sale.eventId} ` +
    `category ${sale.categoryIds[0]}, quota ${QUOTA}, ${VUS} buyers`);
  return Object.assign(sale, { prefix: runPrefix() });
}

/** The ErrorInfo reason of a failed call, when the server sent one. */
function reason(response) {
  const details = (response.error && response.error.details) || [];
  const info = details.find((detail) => String(detail['@type'] || '').endsWith('google.rpc.ErrorInfo'));
  return info ? info.reason : '';
}

let tokens;
let connected = false;

export default function (sale) {
  tokens = tokens || new UserTokens(sale.prefix, 1);
  if (!connected) {
    client.connect(GRPC_ADDR, { plaintext: true, reflect: false });
    connected = true;
  }
  const request = { category_id: sale.categoryIds[0], quantity: 1 };
  const started = Date.now();
  const response = client.invoke('stampede.v1.Stampede/Reserve', request, {
    metadata: { authorization: `Bearer ${tokens.next(0)}` },
  });
  latency.add(Date.now() - started);
  const why = reason(response);
  let outcome = 'other';
  if (response.status === grpc.StatusOK) {
    outcome = 'held';
    held.add(1);
  } else if (response.status === grpc.StatusFailedPrecondition && (why === 'sold_out' || why === 'limit_exceeded')) {
    outcome = 'sold_out';
    soldOut.add(1);
  } else {
    other.add(1);
    console.warn(`unexpected answer ${response.status} ${why}: ${JSON.stringify(response.error)}`);
  }
  failed.add(outcome === 'other');
  check(response, { 'grpc: OK held, or FAILED_PRECONDITION sold_out / limit_exceeded': () => outcome !== 'other' });
}

export function teardown(sale) {
  client.connect(GRPC_ADDR, { plaintext: true, reflect: false });
  const response = client.invoke('stampede.v1.Stampede/GetAvailability', { event_id: sale.eventId });
  client.close();
  const levels = response.message && response.message.categories && response.message.categories[0];
  // int64 fields arrive as strings in k6's JSON mapping of protobuf.
  const number = (value) => Number(value || 0);
  const exact = levels && number(levels.held) + number(levels.sold) === QUOTA && number(levels.available) === 0;
  if (!exact) {
    console.error(`the server disagrees: ${JSON.stringify(response.message)}`);
  }
  mismatches.add(exact ? 0 : 1);
}

export function handleSummary(data) {
  return summarize(
    data,
    `gRPC flash sale: quota ${QUOTA}, ${VUS} buyers`,
    ['grpc_held', 'grpc_sold_out', 'grpc_other', 'grpc_final_mismatch'],
    'grpc_reserve_duration',
  );
}
