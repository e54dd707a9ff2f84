// An event from the buyer's side: live availability per category (the SSE stream), the
// waiting room, and reserving by quantity or on the seat map.

import * as api from '../api.js';
import * as session from '../session.js';
import { h, replace, alertArea, busy, field } from '../dom.js';
import { count, dateTime, money } from '../format.js';
import { Cleanup, followAvailability } from '../live.js';
import { WaitingRoomPanel } from './waiting_room.js';
import { SeatMap } from './seat_map.js';

/** What a refusal means for the buyer, beyond the API's own detail. */
function explanation(problem, category, asked) {
  switch (problem.code) {
    case 'sold_out':
      return 'There are not that many tickets left. Ask for fewer, or wait: tickets come back when holds expire or are cancelled.';
    case 'seat_taken':
      return `Someone else took ${problem.seats.join(', ')} a moment before you. Nothing was held; those seats now show as taken. Pick other seats.`;
    case 'no_adjacent_seats':
      return `No single row has ${asked} free seats side by side, though at least ${asked} are free in all. Pick seats on the map yourself, or ask for fewer together.`;
    case 'limit_exceeded':
      return `Each person may hold or buy at most ${category.max_per_user} in this category, counting what you already hold and bought.`;
    case 'queue_pass_required':
      return 'This sale has a waiting room: join the queue above and reserve once it is your turn.';
    case 'unauthorized':
      return 'Your token is missing or no longer valid: sign in again.';
    case 'rate_limited':
    case 'unavailable':
      return problem.retryAfter ? `The service is busy. Try again in ${problem.retryAfter} s.` : 'The service is busy. Try again shortly.';
    default:
      return null;
  }
}

function levelsView() {
  const numbers = {};
  const meter = h('meter', { min: 0, max: 1, value: 0, 'aria-label': 'Tickets available' });
  const item = (name, text) => {
    numbers[name] = h('dd', { 'data-field': name }, '…');
    return [h('dt', {}, text), numbers[name]];
  };
  const badge = h('span', { class: 'badge', 'data-field': 'state' });
  const element = h('div', { class: 'levels' }, badge, meter, h('dl', { class: 'numbers' }, item('available', 'Available'), item('held', 'On hold'), item('sold', 'Sold')));
  return {
    element,
    update(levels) {
      meter.max = levels.quota;
      meter.value = levels.available;
      meter.setAttribute('aria-valuetext', `${levels.available} of ${levels.quota} available`);
      for (const name of ['available', 'held', 'sold']) numbers[name].textContent = count(levels[name]);
      const soldOut = levels.available === 0;
      badge.textContent = soldOut ? 'Sold out' : `${count(levels.available)} left`;
      badge.setAttribute('class', soldOut ? 'badge sold-out' : 'badge open');
    },
  };
}

/** One category: its levels and the controls to reserve in it. */
class CategoryCard {
  constructor(event, category, room, cleanup) {
    Object.assign(this, { event, category, room, cleanup });
    this.alerts = alertArea();
    this.levels = levelsView();
    this.intent = new api.Intent();
    this.reserveButtons = [];
    this.soldOut = false;
    this.last = null; // the levels of the previous stream message
    this.seats = null; // the seat map, in a seated category
    this.seatsLoading = false;
    this.seatsAgain = false;
    this.hint = h('p', { class: 'hint', 'aria-live': 'polite' });
    const controls = category.seat_map ? this.seatedControls() : this.countedControls();
    this.element = h(
      'section',
      { class: 'card category', 'data-category-id': category.id, 'aria-labelledby': `category-${category.id}` },
      h('h2', { id: `category-${category.id}` }, category.name, category.seat_map ? h('span', { class: 'muted small' }, ' · reserved seating') : null),
      h('p', { class: 'price' }, money(category.price, category.currency), ' each · at most ', String(category.max_per_user), ' per person'),
      this.levels.element,
      this.alerts.element,
      controls,
      this.hint,
    );
    this.updateButtons();
  }

  async reserve(button, body, asked) {
    this.alerts.clear();
    await busy(button, async () => {
      const pass = this.room.pass();
      try {
        const result = await api.call('POST', '/reserve', { body, intent: this.intent, headers: pass ? { 'Queue-Pass': pass } : {} });
        const reservation = result.body;
        const created = Date.parse(reservation.created_at);
        if (Math.abs(created - api.serverNow()) < 5000) api.observeServerTime(created, result.sentAt, result.receivedAt);
        session.rememberReservation(reservation.id);
        window.location.hash = `#/reservations/${reservation.id}`;
      } catch (problem) {
        if (problem.code === 'queue_pass_required') this.room.refused();
        // The map is read again; the refusal below already says which seats went.
        if (problem.code === 'seat_taken' && this.seats) this.refreshSeats(true);
        this.alerts.show(problem, explanation(problem, this.category, asked));
      }
    });
    this.updateButtons();
  }

  updateButtons() {
    const waiting = this.room.required() && !this.room.pass();
    const signedOut = !session.token();
    for (const button of this.reserveButtons) {
      const needsPick = button.dataset.needsSelection === 'true' && !this.seats.selected().length;
      button.disabled = this.soldOut || waiting || signedOut || needsPick;
    }
    this.hint.textContent = signedOut
      ? 'Sign in to reserve.'
      : this.soldOut ? 'Sold out.' : waiting ? 'Join the queue first: you can reserve once it is your turn.' : '';
  }

  countedControls() {
    const { category, event } = this;
    const quantity = h('input', { type: 'number', min: 1, max: category.max_per_user, value: 1, inputmode: 'numeric' });
    const reserveButton = h('button', { type: 'button', class: 'primary' }, 'Reserve');
    reserveButton.addEventListener('click', () => {
      const asked = Number(quantity.value);
      this.reserve(reserveButton, { category_id: category.id, event_id: event.id, quantity: asked }, asked);
    });
    this.reserveButtons.push(reserveButton);
    return [h('div', { class: 'inline-form' }, field('Tickets', quantity, `1 to ${category.max_per_user}`), reserveButton)];
  }

  seatedControls() {
    const { category, event } = this;
    const selection = h('p', { class: 'selection', 'aria-live': 'polite' }, 'No seats picked yet.');
    const reservePicked = h('button', { type: 'button', class: 'primary', 'data-needs-selection': 'true' }, 'Reserve picked seats');
    const clearPicked = h('button', { type: 'button' }, 'Clear');
    this.seats = new SeatMap(category.seat_map, category.max_per_user, (picked, message) => {
      selection.textContent = message
        || (picked.length ? `Picked ${picked.join(', ')}: ${money(category.price * picked.length, category.currency)}` : 'No seats picked yet.');
      this.updateButtons();
    });
    reservePicked.addEventListener('click', () => {
      const picked = this.seats.selected();
      this.reserve(reservePicked, { category_id: category.id, event_id: event.id, seats: picked }, picked.length);
    });
    clearPicked.addEventListener('click', () => this.seats.clear());
    const together = h('input', { type: 'number', min: 1, max: category.max_per_user, value: 2, inputmode: 'numeric' });
    const findTogether = h('button', { type: 'button' }, 'Find seats together');
    findTogether.addEventListener('click', () => {
      const quantity = Number(together.value);
      this.reserve(findTogether, { category_id: category.id, event_id: event.id, quantity, adjacent: true }, quantity);
    });
    this.reserveButtons.push(reservePicked, findTogether);
    this.refreshSeats();
    return [
      this.seats.element,
      selection,
      h('div', { class: 'row-actions' }, reservePicked, clearPicked),
      h('div', { class: 'inline-form' }, field('Best seats together', together, `1 to ${category.max_per_user}`), findTogether),
    ];
  }

  /** Reads the taken seats again: at most one read at a time; a change during a read asks for one more. */
  async refreshSeats(quiet = false) {
    if (this.seatsLoading) {
      this.seatsAgain = true;
      return;
    }
    this.seatsLoading = true;
    try {
      const document = await api.get(`/categories/${this.category.id}/seats`);
      if (this.cleanup.closed) return;
      const lost = this.seats.setTaken(document);
      if (lost.length && !quiet) {
        const detail = `${lost.join(', ')} ${lost.length === 1 ? 'was' : 'were'} just taken by someone else`;
        this.alerts.show({ status: 0, code: 'seat_taken', title: 'Seats taken', detail, errors: [] }, 'They are no longer in your pick.');
      }
    } catch (problem) {
      this.alerts.show(problem);
    } finally {
      this.seatsLoading = false;
      if (this.seatsAgain) {
        this.seatsAgain = false;
        this.refreshSeats();
      }
    }
  }

  /** A stream message's levels of this category. */
  update(levels) {
    this.levels.update(levels);
    this.soldOut = levels.available === 0;
    this.updateButtons();
    const changed = this.last && (this.last.available !== levels.available || this.last.sold !== levels.sold);
    this.last = levels;
    if (changed && this.seats) this.refreshSeats();
  }
}

export function renderEvent(main, [eventId]) {
  const cleanup = new Cleanup();
  const alerts = alertArea();
  const streamState = h('p', { class: 'stream-state', role: 'status', 'data-stream': 'connecting' }, 'Connecting…');
  const heading = h('h1', {}, 'Event');
  const details = h('p', { class: 'muted' });
  const categories = h('div', { class: 'categories' });
  const cards = new Map();
  main.append(h('p', { class: 'crumbs' }, h('a', { href: '#/' }, '← Events')), heading, details, streamState, alerts.element);

  (async () => {
    let event;
    try {
      event = await api.get(`/events/${eventId}`);
    } catch (problem) {
      alerts.show(problem);
      return;
    }
    if (cleanup.closed) return;
    heading.textContent = event.name;
    document.title = `${event.name} · Stampede`;
    replace(details, event.venue, ' · ', dateTime(event.starts_at), event.sale_ends_at ? ` · sale ends ${dateTime(event.sale_ends_at)}` : '');
    const room = new WaitingRoomPanel(event.id, cleanup, () => cards.forEach((card) => card.updateButtons()));
    for (const category of event.categories) {
      const card = new CategoryCard(event, category, room, cleanup);
      cards.set(category.id, card);
      categories.append(card.element);
    }
    if (!event.categories.length) categories.append(h('p', { class: 'muted' }, 'No tickets on sale yet.'));
    main.append(room.element, categories);
    cleanup.add(
      followAvailability(
        event.id,
        (availability) => {
          for (const levels of availability.categories) cards.get(levels.category_id)?.update(levels);
        },
        (state, text) => {
          streamState.dataset.stream = state;
          streamState.textContent = state === 'live' ? '● Live: numbers update as tickets are taken' : text;
        },
      ),
    );
  })();
  return () => cleanup.run();
}
