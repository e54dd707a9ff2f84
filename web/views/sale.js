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

/** The page: figures, the chart over time, the categories and the waiting room. */
class SaleView {
  constructor(main, eventId) {
    this.eventId = eventId;
    this.cleanup = new Cleanup();
    this.alerts = alertArea();
    this.heading = h('h1', {}, 'Live sale');
    this.streamState = h('p', { class: 'stream-state', role: 'status', 'data-stream': 'connecting' }, 'Connecting…');
    this.figures = h('div', { class: 'figures' });
    this.chartBox = h('div', { class: 'chart-box' });
    this.table = h('tbody');
    this.roomBox = h('div', { class: 'room-figures', 'data-field': 'room' }, 'Reading the waiting room…');
    this.queueChart = h('div', { class: 'chart-box' });
    this.history = [];
    this.queueHistory = [];
    this.latest = null; // the last availability document
    this.event = null;
    if (!session.isAdmin()) {
      main.append(h('p', { class: 'notice' }, 'This page is meant for organisers; the numbers are public, so it works with any token.'));
    }
    main.append(...this.layout());
  }

  layout() {
    const section = (id, title, ...children) => h('section', { class: 'card', 'aria-labelledby': id }, h('h2', { id }, title), children);
    const headings = ['Category', 'Quota', 'Available', 'On hold', 'Sold', ''].map((text) => h('th', { scope: 'col' }, text));
    return [
      h('p', { class: 'crumbs' }, h('a', { href: `#/organise/events/${this.eventId}` }, '← Manage the event')),
      this.heading,
      this.streamState,
      this.alerts.element,
      this.figures,
      section('over-time', 'Tickets over time', legend(SERIES), this.chartBox),
      section('per-category', 'Per category',
        h('div', { class: 'table-scroll' }, h('table', { class: 'sale-table' }, h('thead', {}, h('tr', {}, headings)), this.table))),
      section('queue', 'Waiting room', this.roomBox, legend([['waiting', 'Waiting']]), this.queueChart),
    ];
  }

  start() {
    api.get(`/events/${this.eventId}`).then((found) => {
      this.event = found;
      this.heading.textContent = `Live sale: ${found.name}`;
      this.draw();
    }, (problem) => this.alerts.show(problem));
    this.cleanup.add(followAvailability(this.eventId, (availability) => {
      this.latest = availability;
      this.sample();
    }, (state, text) => {
      this.streamState.dataset.stream = state;
      this.streamState.textContent = state === 'live' ? '● Live' : text;
    }));
    this.cleanup.add(every(SAMPLE_MS, () => this.sample()));
    this.cleanup.add(every(ROOM_POLL_MS, () => this.readRoom()));
    return () => this.cleanup.run();
  }

  revenue() {
    const taken = new Map();
    for (const levels of this.latest.categories) {
      const category = this.event?.categories.find((candidate) => candidate.id === levels.category_id);
      if (category) taken.set(category.currency, (taken.get(category.currency) || 0) + levels.sold * category.price);
    }
    return [...taken].map(([currency, amount]) => money(amount, currency)).join(' + ') || '—';
  }

  draw() {
    if (!this.latest) return;
    const sum = totals(this.latest);
    const figure = (name, text, value) => h('div', { class: 'figure' }, h('span', { class: 'figure-value', 'data-field': name }, value), h('span', { class: 'figure-label' }, text));
    replace(
      this.figures,
      figure('available', 'available', count(sum.available)),
      figure('held', 'on hold', count(sum.held)),
      figure('sold', 'sold', count(sum.sold)),
      figure('revenue', 'taken', this.revenue()),
    );
    const label = `Available, on hold and sold tickets over time; now ${sum.available} available, ${sum.held} on hold, ${sum.sold} sold`;
    replace(this.chartBox, chart(this.history, SERIES, label));
    replace(this.table, this.latest.categories.map(categoryRow));
  }

  sample() {
    if (!this.latest) return;
    this.history.push({ t: Date.now(), ...totals(this.latest) });
    if (this.history.length > HISTORY_MAX) this.history.shift();
    this.draw();
  }

  async readRoom() {
    try {
      const room = await api.get(`/events/${this.eventId}/waiting-room`);
      if (this.cleanup.closed) return;
      this.queueHistory.push({ t: Date.now(), waiting: room.waiting });
      if (this.queueHistory.length > HISTORY_MAX) this.queueHistory.shift();
      replace(this.roomBox,
        h('span', { 'data-field': 'room-enabled' }, room.enabled ? `On, ${count(room.admit_per_second)} let in per second` : 'Off'),
        ' · ', h('strong', { 'data-field': 'waiting' }, count(room.waiting)), ' waiting · ',
        h('strong', { 'data-field': 'admitted' }, count(room.admitted)), ' admitted so far');
      replace(this.queueChart, chart(this.queueHistory, [['waiting', 'Waiting']], `Queue size over time; now ${room.waiting} waiting`));
    } catch (problem) {
      this.alerts.show(problem);
    }
  }
}

function categoryRow(levels) {
  return h('tr', { 'data-category-id': levels.category_id },
    h('th', { scope: 'row' }, levels.name, levels.available === 0 ? h('span', { class: 'badge sold-out' }, 'Sold out') : null),
    h('td', { class: 'number' }, count(levels.quota)),
    h('td', { class: 'number', 'data-field': 'available' }, count(levels.available)),
    h('td', { class: 'number', 'data-field': 'held' }, count(levels.held)),
    h('td', { class: 'number', 'data-field': 'sold' }, count(levels.sold)),
    h('td', {}, bar(levels)));
}

export function renderSale(main, [eventId]) {
  return new SaleView(main, eventId).start();
}
