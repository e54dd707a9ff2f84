// One reservation: while held, a countdown to `expires_at`, confirm with a test card, or
// cancel; afterwards its final state.

import * as api from '../api.js';
import { h, replace, alertArea, busy, field } from '../dom.js';
import { clockTime, countdown, dateTime, money } from '../format.js';
import { Cleanup, every } from '../live.js';

const TEST_CARDS = [
  ['tok_visa', 'Visa test card (pays)'],
  ['tok_decline', 'Declined test card'],
  ['tok_fail', 'Test card whose gateway fails'],
];

// The API reads a hold as expired within 2 s after expires_at.
const EXPIRY_SETTLE_MS = 2500;

const STATUS_TEXT = {
  held: 'On hold',
  confirmed: 'Confirmed',
  cancelled: 'Cancelled',
  expired: 'Expired',
};

function explanation(problem) {
  switch (problem.code) {
    case 'payment_declined':
      return 'Your card was declined and nothing was charged. The hold stays until it expires: try another card.';
    case 'reservation_expired':
      return 'The hold ran out before the payment went through, so the tickets went back on sale and nothing was charged.';
    case 'reservation_not_held':
      return 'This reservation is no longer on hold.';
    case 'unavailable':
      return 'The payment could not be completed and nothing was charged; the hold stays. Try again.';
    default:
      return null;
  }
}

function summary(reservation, event) {
  const category = event?.categories.find((candidate) => candidate.id === reservation.category_id);
  const rows = [
    ['Event', event ? h('a', { href: `#/events/${event.id}` }, event.name) : `#${reservation.event_id}`],
    ['Category', category ? category.name : `#${reservation.category_id}`],
    ['Tickets', String(reservation.quantity)],
    reservation.seats ? ['Seats', h('span', { 'data-field': 'seats' }, reservation.seats.join(', '))] : null,
    ['Amount', money(reservation.amount, reservation.currency)],
    ['Reserved', dateTime(reservation.created_at)],
    reservation.confirmed_at ? ['Confirmed', dateTime(reservation.confirmed_at)] : null,
    reservation.payment_id ? ['Payment', h('code', {}, reservation.payment_id)] : null,
  ];
  return h('dl', { class: 'summary' }, rows.filter(Boolean).map(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]));
}

/** The page of one reservation; `show` redraws it from the API's answer. */
class HoldView {
  constructor(main, reservationId) {
    this.reservationId = reservationId;
    this.cleanup = new Cleanup();
    this.alerts = alertArea();
    this.heading = h('h1', {}, 'Reservation');
    this.body = h('div', { class: 'hold' });
    this.confirmIntent = new api.Intent();
    this.event = null;
    this.stopTicker = null;
    main.append(h('p', { class: 'crumbs' }, h('a', { href: '#/reservations' }, '← My reservations')), this.heading, this.alerts.element, this.body);
  }

  start() {
    this.load();
    return () => this.cleanup.run();
  }

  heldControls(reservation) {
    const remaining = h('p', { class: 'countdown big', role: 'timer', 'data-field': 'countdown' });
    const bar = h('progress', { max: 1, value: 1, 'aria-label': 'Time left on the hold' });
    const card = h('select', {}, TEST_CARDS.map(([value, text]) => h('option', { value }, text)));
    const pay = h('button', { type: 'button', class: 'primary' }, `Pay ${money(reservation.amount, reservation.currency)}`);
    const cancel = h('button', { type: 'button', class: 'danger' }, 'Cancel the hold');
    const expiresAt = Date.parse(reservation.expires_at);
    const total = expiresAt - Date.parse(reservation.created_at);
    let expired = false;
    const tick = () => {
      const left = expiresAt - api.serverNow();
      remaining.textContent = left > 0 ? `${countdown(left)} left to pay` : 'The hold has expired';
      bar.max = total;
      bar.value = Math.max(0, left);
      if (left <= 0 && !expired) {
        expired = true;
        pay.disabled = true;
        cancel.disabled = true;
        setTimeout(() => this.load(), EXPIRY_SETTLE_MS);
      }
    };
    const payment = { reservation_id: reservation.id, payment: { token: card.value } };
    pay.addEventListener('click', () => {
      payment.payment.token = card.value;
      this.act(pay, '/confirm', payment, this.confirmIntent);
    });
    cancel.addEventListener('click', () => this.act(cancel, `/reservations/${reservation.id}/cancel`));
    this.stopTicker = this.cleanup.add(every(250, tick));
    return [
      remaining,
      bar,
      h('p', { class: 'muted' }, `Held until ${clockTime(reservation.expires_at)}. Pay before then, or the tickets go back on sale.`),
      h('div', { class: 'inline-form' }, field('Test card', card, 'Simulated payments: nothing is charged'), pay),
      h('div', { class: 'row-actions' }, cancel),
    ];
  }

  show(reservation) {
    if (this.stopTicker) this.stopTicker();
    this.stopTicker = null;
    const { quantity, seats } = reservation;
    this.heading.textContent = seats ? `Seats ${seats.join(', ')}` : `${quantity} ${quantity === 1 ? 'ticket' : 'tickets'}`;
    const status = h('p', {}, h('span', { class: `badge ${reservation.status}`, 'data-field': 'status', 'data-status': reservation.status }, STATUS_TEXT[reservation.status] || reservation.status));
    const after = {
      confirmed: h('p', { class: 'notice', role: 'status' }, 'Paid. Enjoy the show!'),
      cancelled: h('p', { class: 'muted' }, 'You cancelled this hold; the tickets went back on sale.'),
      expired: h('p', { class: 'muted' }, 'This hold expired before it was paid; the tickets went back on sale.'),
    }[reservation.status];
    replace(this.body, status, summary(reservation, this.event), reservation.status === 'held' ? this.heldControls(reservation) : after);
  }

  async act(button, path, requestBody, intent) {
    this.alerts.clear();
    await busy(button, async () => {
      try {
        const result = await api.call('POST', path, { body: requestBody, intent });
        this.show(result.body);
      } catch (problem) {
        this.alerts.show(problem, explanation(problem));
        if (problem.code === 'reservation_expired' || problem.code === 'reservation_not_held') this.load();
      }
    });
  }

  async load() {
    try {
      const reservation = await api.get(`/reservations/${this.reservationId}`);
      if (this.cleanup.closed) return;
      if (!this.event || this.event.id !== reservation.event_id) {
        this.event = await api.get(`/events/${reservation.event_id}`).catch(() => null);
      }
      if (!this.cleanup.closed) this.show(reservation);
    } catch (problem) {
      this.alerts.show(problem, problem.code === 'not_found' ? 'There is no reservation of yours with this id.' : null);
    }
  }
}

export function renderHold(main, [reservationId]) {
  return new HoldView(main, reservationId).start();
}
