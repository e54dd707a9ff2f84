// The organiser's live sale view: the availability stream of an event as numbers per
// category, a chart of available, on-hold and sold tickets over time, and the waiting
// room's queue, read every second.

import * as api from '../api.js';
import * as session from '../session.js';
import { h, svg, replace, alertArea } from '../dom.js';
import { clockTime, count, money } from '../format.js';
import { Cleanup, every, followAvailability } from '../live.js';

const HISTORY_MAX = 600;
const SAMPLE_MS = 1000;
const ROOM_POLL_MS = 1000;
const CHART = { width: 640, height: 220, left: 48, right: 12, top: 12, bottom: 28 };
const SERIES = [
  ['available', 'Available'],
  ['held', 'On hold'],
  ['sold', 'Sold'],
];

function totals(availability) {
  const sum = { quota: 0, available: 0, held: 0, sold: 0 };
  for (const category of availability.categories) for (const key of Object.keys(sum)) sum[key] += category[key];
  return sum;
}

/** A line chart of `history` ([{t, ...values}]) for the named series, as SVG with attributes only. */
function chart(history, series, label) {
  const { width, height, left, right, top, bottom } = CHART;
  const plotWidth = width - left - right;
  const plotHeight = height - top - bottom;
  const first = history[0]?.t ?? 0;
  const last = history[history.length - 1]?.t ?? 1;
  const span = Math.max(last - first, 10000);
  const highest = Math.max(1, ...history.flatMap((sample) => series.map(([key]) => sample[key])));
  const x = (t) => left + ((t - first) / span) * plotWidth;
  const y = (value) => top + plotHeight - (value / highest) * plotHeight;
  const lines = series.map(([key], index) =>
    svg('polyline', { class: `line series-${index}`, points: history.map((sample) => `${x(sample.t).toFixed(1)},${y(sample[key]).toFixed(1)}`).join(' ') }),
  );
  return svg(
    'svg',
    { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img', 'aria-label': label },
    svg('line', { class: 'axis', x1: left, y1: top + plotHeight, x2: width - right, y2: top + plotHeight }),
    svg('line', { class: 'axis', x1: left, y1: top, x2: left, y2: top + plotHeight }),
    svg('text', { class: 'tick', x: left - 6, y: top + 4, 'text-anchor': 'end' }, count(highest)),
    svg('text', { class: 'tick', x: left - 6, y: top + plotHeight, 'text-anchor': 'end' }, '0'),
    history.length ? svg('text', { class: 'tick', x: left, y: height - 8 }, clockTime(new Date(first).toISOString())) : null,
    history.length ? svg('text', { class: 'tick', x: width - right, y: height - 8, 'text-anchor': 'end' }, clockTime(new Date(last).toISOString())) : null,
    lines,
  );
}

function legend(series) {
  return h('p', { class: 'legend' }, series.map(([, text], index) => [h('span', { class: `swatch series-${index}` }), ` ${text} `]));
}

function bar(levels) {
  const width = 200;
  const scale = (value) => (levels.quota ? (value / levels.quota) * width : 0);
  let offset = 0;
  const parts = [['sold', 2], ['held', 1], ['available', 0]].map(([key, index]) => {
    const rect = svg('rect', { class: `series-${index}`, x: offset.toFixed(2), y: 0, width: scale(levels[key]).toFixed(2), height: 12 });
    offset += scale(levels[key]);
    return rect;
  });
  return svg('svg', { viewBox: `0 0 ${width} 12`, class: 'bar', 'aria-hidden': 'true' }, parts);
}

export function renderSale(main, [eventId]) {
  const cleanup = new Cleanup();
  const alerts = alertArea();
  const heading = h('h1', {}, 'Live sale');
  const streamState = h('p', { class: 'stream-state', role: 'status', 'data-stream': 'connecting' }, 'Connecting…');
  const figures = h('div', { class: 'figures' });
  const chartBox = h('div', { class: 'chart-box' });
  const table = h('tbody');
  const roomBox = h('div', { class: 'room-figures', 'data-field': 'room' }, 'Reading the waiting room…');
  const queueChart = h('div', { class: 'chart-box' });
  const history = [];
  const queueHistory = [];
  let latest = null;
  let event = null;

  if (!session.isAdmin()) {
    main.append(h('p', { class: 'notice' }, 'This page is meant for organisers; the numbers are public, so it works with any token.'));
  }
  main.append(
    h('p', { class: 'crumbs' }, h('a', { href: `#/organise/events/${eventId}` }, '← Manage the event')),
    heading,
    streamState,
    alerts.element,
    figures,
    h('section', { class: 'card', 'aria-labelledby': 'over-time' }, h('h2', { id: 'over-time' }, 'Tickets over time'), legend(SERIES), chartBox),
    h('section', { class: 'card', 'aria-labelledby': 'per-category' }, h('h2', { id: 'per-category' }, 'Per category'),
      h('div', { class: 'table-scroll' }, h('table', { class: 'sale-table' },
        h('thead', {}, h('tr', {}, ['Category', 'Quota', 'Available', 'On hold', 'Sold', ''].map((text) => h('th', { scope: 'col' }, text)))),
        table))),
    h('section', { class: 'card', 'aria-labelledby': 'queue' }, h('h2', { id: 'queue' }, 'Waiting room'), roomBox, legend([['waiting', 'Waiting']]), queueChart),
  );

  function draw() {
    if (!latest) return;
    const sum = totals(latest);
    const revenue = new Map();
    for (const levels of latest.categories) {
      const category = event?.categories.find((candidate) => candidate.id === levels.category_id);
      if (category) revenue.set(category.currency, (revenue.get(category.currency) || 0) + levels.sold * category.price);
    }
    const figure = (name, text, value) => h('div', { class: 'figure' }, h('span', { class: 'figure-value', 'data-field': name }, value), h('span', { class: 'figure-label' }, text));
    replace(
      figures,
      figure('available', 'available', count(sum.available)),
      figure('held', 'on hold', count(sum.held)),
      figure('sold', 'sold', count(sum.sold)),
      figure('revenue', 'taken', [...revenue].map(([currency, amount]) => money(amount, currency)).join(' + ') || '—'),
    );
    replace(chartBox, chart(history, SERIES, `Available, on hold and sold tickets over time; now ${sum.available} available, ${sum.held} on hold, ${sum.sold} sold`));
    replace(table, latest.categories.map((levels) =>
      h('tr', { 'data-category-id': levels.category_id },
        h('th', { scope: 'row' }, levels.name, levels.available === 0 ? h('span', { class: 'badge sold-out' }, 'Sold out') : null),
        h('td', { class: 'number' }, count(levels.quota)),
        h('td', { class: 'number', 'data-field': 'available' }, count(levels.available)),
        h('td', { class: 'number', 'data-field': 'held' }, count(levels.held)),
        h('td', { class: 'number', 'data-field': 'sold' }, count(levels.sold)),
        h('td', {}, bar(levels)))));
  }

  function sample() {
    if (!latest) return;
    history.push({ t: Date.now(), ...totals(latest) });
    if (history.length > HISTORY_MAX) history.shift();
    draw();
  }

  async function readRoom() {
    try {
      const room = await api.get(`/events/${eventId}/waiting-room`);
      if (cleanup.closed) return;
      queueHistory.push({ t: Date.now(), waiting: room.waiting });
      if (queueHistory.length > HISTORY_MAX) queueHistory.shift();
      replace(roomBox,
        h('span', { 'data-field': 'room-enabled' }, room.enabled ? `On, ${count(room.admit_per_second)} let in per second` : 'Off'),
        ' · ', h('strong', { 'data-field': 'waiting' }, count(room.waiting)), ' waiting · ',
        h('strong', { 'data-field': 'admitted' }, count(room.admitted)), ' admitted so far');
      replace(queueChart, chart(queueHistory, [['waiting', 'Waiting']], `Queue size over time; now ${room.waiting} waiting`));
    } catch (problem) {
      alerts.show(problem);
    }
  }

  api.get(`/events/${eventId}`).then((found) => {
    event = found;
    heading.textContent = `Live sale: ${found.name}`;
    draw();
  }, (problem) => alerts.show(problem));
  cleanup.add(followAvailability(eventId, (availability) => {
    latest = availability;
    sample();
  }, (state, text) => {
    streamState.dataset.stream = state;
    streamState.textContent = state === 'live' ? '● Live' : text;
  }));
  cleanup.add(every(SAMPLE_MS, sample));
  cleanup.add(every(ROOM_POLL_MS, readRoom));
  return () => cleanup.run();
}
