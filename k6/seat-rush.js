// A rush on a seated category: VUS distinct buyers released at once. Half of them race
// for the same few seats (HOT_SEATS named seats, each buyer naming one or two of them);
// the other half ask for the best available adjacent pairs and fours.
//
// The run fails unless
// - every answer is 201, or 409 seat_taken / no_adjacent_seats / sold_out (no 5xx, no shed),
// - no hot seat was granted twice (a threshold per seat),
// - every 201 names distinct seats, the ones asked for, or for a pair or a four
//   consecutive seats in one row, and
// - teardown finds the server agreeing: the live map's taken seats == held + sold (a
//   seat granted twice would be counted twice there, but taken once), and
//   available + held + sold == quota. The summary also compares held + sold with the
//   seats the clients were granted (HOLD_TTL must outlast the run, so none expires).
//
// It creates its own event and seated category (ADMIN_TOKEN or JWT_SECRET) with ROWS
// rows of SEATS_PER_ROW seats; users are minted from JWT_SECRET, one per VU.
//
//   BASE_URL=http://127.0.0.1:8080 JWT_SECRET=... VUS=2000 k6 run k6/seat-rush.js
import http from 'k6/http';
import { check } from 'k6';
import { Counter, Rate } from 'k6/metrics';
import {
  BASE_URL,
  TREND_STATS,
  UserTokens,
  availability,
  createSale,
  intEnv,
  numberEnv,
  params,
  problemCode,
  requiredAdminToken,
  runPrefix,
  summarize,
} from './lib/stampede.js';

const VUS = intEnv('VUS', 2000);
const ROWS = intEnv('ROWS', 20);
const SEATS_PER_ROW = intEnv('SEATS_PER_ROW', 50);
const HOT_SEATS = Math.min(intEnv('HOT_SEATS', 4), SEATS_PER_ROW);
const hotSeats = Array.from({ length: HOT_SEATS }, (_, index) => `R0-${index + 1}`);

const granted = new Counter('seat_granted');
const hotGranted = new Counter('seat_hot_granted');
const taken = new Counter('seat_taken');
const noAdjacent = new Counter('seat_no_adjacent');
const soldOut = new Counter('seat_sold_out');
const failed = new Rate('seat_failed');
const finalTaken = new Counter('seat_final_taken');
const finalHeldSold = new Counter('seat_final_held_sold');
const mismatches = new Counter('seat_final_mismatch');

const thresholds = {
  seat_failed: ['rate==0'],
  seat_final_mismatch: ['count==0'],
  'http_req_duration{name:reserve}': [`p(99)<${numberEnv('P99_MS', 5000)}`],
};
for (const seat of hotSeats) {
  // Each hot seat goes to one buyer at most: more is a seat sold twice.
  thresholds[`seat_hot_granted{seat:${seat}}`] = ['count<=1'];
}

export const options = {
  scenarios: {
    rush: { executor: 'per-vu-iterations', vus: VUS, iterations: 1, maxDuration: __ENV.MAX_DURATION || '120s' },
  },
  thresholds: thresholds,
  summaryTrendStats: TREND_STATS,
  setupTimeout: '60s',
  teardownTimeout: '60s',
};

http.setResponseCallback(http.expectedStatuses(201, 409));

export function setup() {
  const admin = requiredAdminToken('seat-rush.js');
  const seatMap = Array.from({ length: ROWS }, (_, index) => ({ row: `R${index}`, seats: SEATS_PER_ROW }));
  const sale = createSale(admin, { name: 'k6 seat rush', maxPerUser: 4, categories: 1, seatMap: seatMap });
  console.log(`seat rush on ${BASE_URL}: event ${sale.eventId} category ${sale.categoryIds[0]}, ` +
    `${ROWS} x ${SEATS_PER_ROW} seats, ${VUS} buyers, hot seats ${hotSeats.join(',')}`);
  return Object.assign(sale, { prefix: runPrefix() });
}

// What this VU asks for: odd VUs race for one or two hot seats; even VUs want a pair
// or a four, adjacent.
function request(sale) {
  const body = { category_id: sale.categoryIds[0], event_id: sale.eventId };
  if (__VU % 2 === 1) {
    const first = hotSeats[(__VU >> 1) % hotSeats.length];
    const second = hotSeats[((__VU >> 1) + 1) % hotSeats.length];
    body.seats = __VU % 4 === 1 || first === second ? [first] : [first, second];
    return body;
  }
  body.quantity = __VU % 4 === 0 ? 4 : 2;
  body.adjacent = true;
  return body;
}

// Whether a 201's seats are what was asked: distinct, the right number, and for an
// adjacent request consecutive numbers in one row.
function seatsFit(body, seats) {
  if (!Array.isArray(seats) || new Set(seats).size !== seats.length) {
    return false;
  }
  if (body.seats) {
    return seats.length === body.seats.length && body.seats.every((seat) => seats.includes(seat));
  }
  const parsed = seats.map((seat) => seat.split('-'));
  return (
    seats.length === body.quantity &&
    parsed.every(([row, number], index) => row === parsed[0][0] && Number(number) === Number(parsed[0][1]) + index)
  );
}

let tokens;

export default function (sale) {
  tokens = tokens || new UserTokens(sale.prefix, 1);
  const body = request(sale);
  const response = http.post(`${BASE_URL}/reserve`, JSON.stringify(body), params(tokens.next(0), 'reserve'));
  let ok = false;
  if (response.status === 201) {
    const seats = response.json().seats;
    ok = seatsFit(body, seats);
    granted.add(seats.length);
    for (const seat of seats) {
      if (hotSeats.includes(seat)) {
        hotGranted.add(1, { seat: seat });
      }
    }
  } else if (response.status === 409) {
    const code = problemCode(response);
    ok = code === 'seat_taken' || code === 'no_adjacent_seats' || code === 'sold_out';
    if (code === 'seat_taken') {
      taken.add(1);
    } else if (code === 'no_adjacent_seats') {
      noAdjacent.add(1);
    } else if (code === 'sold_out') {
      soldOut.add(1);
    }
  }
  if (!ok) {
    console.warn(`unexpected answer ${response.status} to ${JSON.stringify(body)}: ${String(response.body).slice(0, 200)}`);
  }
  failed.add(!ok);
  check(response, { 'rush: 201 with the seats asked for, or 409 seat_taken / no_adjacent_seats / sold_out': () => ok });
}

export function teardown(sale) {
  const category = sale.categoryIds[0];
  const map = http.get(`${BASE_URL}/categories/${category}/seats`, { tags: { name: 'seats' } });
  const rows = map.status === 200 ? map.json().rows : [];
  const takenSeats = rows.reduce((sum, row) => sum + row.taken.length, 0);
  const level = availability(sale.eventId).categories.find((entry) => entry.category_id === category);
  console.log(`final availability: ${JSON.stringify(level)}, taken seats in the live map: ${takenSeats}`);
  finalTaken.add(takenSeats);
  finalHeldSold.add(level ? level.held + level.sold : -1);
  const ok = check(level, {
    'final: the live map is readable': () => map.status === 200,
    'final: available + held + sold == quota': () => level && level.available + level.held + level.sold === level.quota,
    'final: taken seats == held + sold (no seat counted twice)': () => level && takenSeats === level.held + level.sold,
  });
  mismatches.add(ok ? 0 : 1);
}

export function handleSummary(data) {
  const count = (name) => (data.metrics[name] ? data.metrics[name].values.count : 0);
  const agreed = count('seat_granted') === count('seat_final_held_sold');
  const verdict = agreed
    ? `seats granted (${count('seat_granted')}) == held + sold (${count('seat_final_held_sold')})`
    : `MISMATCH: seats granted ${count('seat_granted')} but held + sold ${count('seat_final_held_sold')}`;
  const summary = summarize(
    data,
    `seat rush: ${ROWS} x ${SEATS_PER_ROW} seats, ${VUS} buyers, ${HOT_SEATS} hot seats`,
    [
      'seat_granted',
      'seat_hot_granted',
      'seat_taken',
      'seat_no_adjacent',
      'seat_sold_out',
      'seat_final_taken',
      'seat_final_held_sold',
      'seat_final_mismatch',
    ],
    'http_req_duration{name:reserve}',
  );
  summary.stdout = `${summary.stdout || ''}  ${verdict}\n`;
  return summary;
}
