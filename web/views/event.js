// An event from the buyer's side: live availability per category (the SSE stream), the
// waiting room, and reserving by quantity or on the seat map.

import * as api from '../api.js';
import * as session from '../session.js';
import { h, replace, alertArea, busy, field } from '../dom.js';
import { count, dateTime, money } from '../format.js';
import { Cleanup, followAvailability } from '../live.js';
import { waitingRoomPanel } from './waiting_room.js';
import { seatMapView } from './seat_map.js';

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
function categoryCard(event, category, room, cleanup) {
  const alerts = alertArea();
  const levels = levelsView();
  const intent = new api.Intent();
  const reserveButtons = [];
  let soldOut = false;

  async function reserve(button, body, asked) {
    alerts.clear();
    await busy(button, async () => {
      const pass = room.pass();
      try {
        const result = await api.call('POST', '/reserve', { body, intent, headers: pass ? { 'Queue-Pass': pass } : {} });
        const reservation = result.body;
        const created = Date.parse(reservation.created_at);
        if (Math.abs(created - api.serverNow()) < 5000) api.observeServerTime(created, result.sentAt, result.receivedAt);
        session.rememberReservation(reservation.id);
        window.location.hash = `#/reservations/${reservation.id}`;
      } catch (problem) {
        if (problem.code === 'queue_pass_required') room.refused();
        // The map is read again; the refusal below already says which seats went.
        if (problem.code === 'seat_taken' && seats) refreshSeats(true);
        alerts.show(problem, explanation(problem, category, asked));
      }
    });
    updateButtons();
  }

  function updateButtons() {
    const waiting = room.required() && !room.pass();
    const signedOut = !session.token();
    for (const button of reserveButtons) {
      button.disabled = soldOut || waiting || signedOut || (button.dataset.needsSelection === 'true' && !seats.selected().length);
    }
    hint.textContent = signedOut ? 'Sign in to reserve.' : soldOut ? 'Sold out.' : waiting ? 'Join the queue first: you can reserve once it is your turn.' : '';
  }

  const hint = h('p', { class: 'hint', 'aria-live': 'polite' });
  const price = h('p', { class: 'price' }, money(category.price, category.currency), ' each · at most ', String(category.max_per_user), ' per person');
  let seats = null;
  let refreshSeats = () => {};
  let controls;

  if (category.seat_map) {
    const selection = h('p', { class: 'selection', 'aria-live': 'polite' }, 'No seats picked yet.');
    const reservePicked = h('button', { type: 'button', class: 'primary', 'data-needs-selection': 'true' }, 'Reserve picked seats');
    const clearPicked = h('button', { type: 'button' }, 'Clear');
    seats = seatMapView(category.seat_map, category.max_per_user, (picked, message) => {
      selection.textContent = message
        || (picked.length ? `Picked ${picked.join(', ')}: ${money(category.price * picked.length, category.currency)}` : 'No seats picked yet.');
      updateButtons();
    });
    reservePicked.addEventListener('click', () => reserve(reservePicked, { category_id: category.id, event_id: event.id, seats: seats.selected() }, seats.selected().length));
    clearPicked.addEventListener('click', () => seats.clear());
    const together = h('input', { type: 'number', min: 1, max: category.max_per_user, value: 2, inputmode: 'numeric' });
    const findTogether = h('button', { type: 'button' }, 'Find seats together');
    findTogether.addEventListener('click', () => {
      const quantity = Number(together.value);
      reserve(findTogether, { category_id: category.id, event_id: event.id, quantity, adjacent: true }, quantity);
    });
    reserveButtons.push(reservePicked, findTogether);
    let loading = null;
    let again = false;
    // At most one read of the map at a time; a change during a read asks for one more.
    refreshSeats = async (quiet = false) => {
      if (loading) {
        again = true;
        return;
      }
      loading = api.get(`/categories/${category.id}/seats`);
      try {
        const document = await loading;
        if (cleanup.closed) return;
        const lost = seats.setTaken(document);
        if (lost.length && !quiet) {
          alerts.show({ status: 0, code: 'seat_taken', title: 'Seats taken', detail: `${lost.join(', ')} ${lost.length === 1 ? 'was' : 'were'} just taken by someone else`, errors: [] }, 'They are no longer in your pick.');
        }
      } catch (problem) {
        alerts.show(problem);
      } finally {
        loading = null;
        if (again) {
          again = false;
          refreshSeats();
        }
      }
    };
    controls = [
      seats.element,
      selection,
      h('div', { class: 'row-actions' }, reservePicked, clearPicked),
      h('div', { class: 'inline-form' }, field('Best seats together', together, `1 to ${category.max_per_user}`), findTogether),
    ];
    refreshSeats();
  } else {
    const quantity = h('input', { type: 'number', min: 1, max: category.max_per_user, value: 1, inputmode: 'numeric' });
    const reserveButton = h('button', { type: 'button', class: 'primary' }, 'Reserve');
    reserveButton.addEventListener('click', () => {
      const asked = Number(quantity.value);
      reserve(reserveButton, { category_id: category.id, event_id: event.id, quantity: asked }, asked);
    });
    reserveButtons.push(reserveButton);
    controls = [h('div', { class: 'inline-form' }, field('Tickets', quantity, `1 to ${category.max_per_user}`), reserveButton)];
  }

  const element = h(
    'section',
    { class: 'card category', 'data-category-id': category.id, 'aria-labelledby': `category-${category.id}` },
    h('h2', { id: `category-${category.id}` }, category.name, category.seat_map ? h('span', { class: 'muted small' }, ' · reserved seating') : null),
    price,
    levels.element,
    alerts.element,
    controls,
    hint,
  );
  let last = null;
  updateButtons();
  return {
    element,
    updateButtons,
    update(levelsNow) {
      levels.update(levelsNow);
      soldOut = levelsNow.available === 0;
      updateButtons();
      const changed = last && (last.available !== levelsNow.available || last.sold !== levelsNow.sold);
      last = levelsNow;
      if (changed && seats) refreshSeats();
    },
  };
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
    const room = waitingRoomPanel(event.id, cleanup, () => cards.forEach((card) => card.updateButtons()));
    for (const category of event.categories) {
      const card = categoryCard(event, category, room, cleanup);
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
