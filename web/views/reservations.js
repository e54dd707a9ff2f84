// "My reservations": the caller's list from `GET /reservations` (served from Postgres, so
// it may trail by the pipeline's delay), completed with the holds made in this tab that
// the list does not show yet (read one by one with `GET /reservations/{id}`).

import * as api from '../api.js';
import * as session from '../session.js';
import { h, replace, alertArea } from '../dom.js';
import { dateTime, money } from '../format.js';
import { Cleanup } from '../live.js';

const LIST_LIMIT = 100;
const MISSING_READ_MAX = 10;

function row(reservation, events) {
  const event = events.get(reservation.event_id);
  const category = event?.categories.find((candidate) => candidate.id === reservation.category_id);
  return h(
    'tr',
    { 'data-reservation-id': reservation.id },
    h('td', {}, dateTime(reservation.created_at)),
    h('td', {}, event ? event.name : `#${reservation.event_id}`, h('br'), h('span', { class: 'muted small' }, category ? category.name : `category #${reservation.category_id}`)),
    h('td', {}, reservation.seats ? reservation.seats.join(', ') : `${reservation.quantity} × ticket`),
    h('td', { class: 'number' }, money(reservation.amount, reservation.currency)),
    h('td', {}, h('span', { class: `badge ${reservation.status}` }, reservation.status)),
    h('td', {}, h('a', { href: `#/reservations/${reservation.id}`, 'aria-label': `Open reservation ${reservation.id}` }, 'Open')),
  );
}

export function renderReservations(main) {
  const cleanup = new Cleanup();
  const alerts = alertArea();
  const content = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  main.append(h('h1', {}, 'My reservations'), alerts.element, content);
  if (!session.token()) {
    replace(content, h('p', {}, h('a', { href: '#/sign-in' }, 'Sign in'), ' to see your reservations.'));
    return () => cleanup.run();
  }
  (async () => {
    try {
      const listed = (await api.get(`/reservations?limit=${LIST_LIMIT}`)).reservations;
      const seen = new Set(listed.map((reservation) => reservation.id));
      const missing = session.knownReservations().filter((id) => !seen.has(id)).slice(0, MISSING_READ_MAX);
      const extra = await Promise.all(missing.map((id) => api.get(`/reservations/${id}`).catch(() => null)));
      const all = [...listed, ...extra.filter(Boolean)].sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at));
      const events = new Map();
      for (const id of new Set(all.map((reservation) => reservation.event_id))) {
        events.set(id, await api.get(`/events/${id}`).catch(() => null));
      }
      if (cleanup.closed) return;
      if (!all.length) {
        replace(content, h('p', {}, 'No reservations yet. ', h('a', { href: '#/' }, 'See the events.')));
        return;
      }
      replace(
        content,
        h('div', { class: 'table-scroll' }, h(
          'table',
          {},
          h('caption', { class: 'sr-only' }, 'Your reservations, newest first'),
          h('thead', {}, h('tr', {}, ['Reserved', 'Event', 'Tickets', 'Amount', 'Status', ''].map((text) => h('th', { scope: 'col' }, text)))),
          h('tbody', {}, all.map((reservation) => row(reservation, events))),
        )),
        h('p', { class: 'muted small' }, 'The list is read from the database and can trail a moment behind a new hold or payment.'),
      );
    } catch (problem) {
      alerts.show(problem);
      content.replaceChildren();
    }
  })();
  return () => cleanup.run();
}
