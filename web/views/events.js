// The events list, a page at a time (`GET /events?after=`).

import * as api from '../api.js';
import * as session from '../session.js';
import { h, alertArea, busy } from '../dom.js';
import { dateTime } from '../format.js';
import { Cleanup } from '../live.js';

const PAGE_SIZE = 20;

function saleWindow(event) {
  const now = Date.now();
  if (event.sale_starts_at && Date.parse(event.sale_starts_at) > now) return ['upcoming', `Sale opens ${dateTime(event.sale_starts_at)}`];
  if (event.sale_ends_at && Date.parse(event.sale_ends_at) <= now) return ['closed', 'Sale closed'];
  return ['open', 'On sale'];
}

/** One event as a card; organisers also get links to manage it and watch its sale. */
export function eventCard(event) {
  const [state, text] = saleWindow(event);
  const seated = event.categories.some((category) => category.seat_map);
  return h(
    'li',
    { class: 'card event-card' },
    h('h2', {}, h('a', { href: `#/events/${event.id}` }, event.name)),
    h('p', { class: 'muted' }, event.venue, ' · ', dateTime(event.starts_at)),
    h(
      'p',
      {},
      h('span', { class: `badge ${state}` }, text),
      ' ',
      `${event.categories.length} ${event.categories.length === 1 ? 'category' : 'categories'}`,
      seated ? ' · reserved seating' : '',
    ),
    session.isAdmin()
      ? h('p', { class: 'actions' }, h('a', { href: `#/organise/events/${event.id}` }, 'Manage'), h('a', { href: `#/organise/events/${event.id}/sale` }, 'Live sale'))
      : null,
  );
}

export function renderEvents(main) {
  const cleanup = new Cleanup();
  const alerts = alertArea();
  const list = h('ul', { class: 'cards', 'aria-label': 'Events' });
  const more = h('button', { type: 'button', hidden: true }, 'More events');
  let after = null;
  const load = () =>
    busy(more, async () => {
      try {
        const page = await api.get(`/events?limit=${PAGE_SIZE}${after ? `&after=${after}` : ''}`);
        if (cleanup.closed) return;
        list.append(...page.events.map(eventCard));
        after = page.next_after;
        more.hidden = after === null;
        if (!list.children.length) list.append(h('li', { class: 'muted' }, 'No events yet.'));
      } catch (problem) {
        alerts.show(problem);
      }
    });
  more.addEventListener('click', load);
  main.append(
    h('h1', {}, 'Events'),
    session.token() ? null : h('p', { class: 'notice' }, 'To reserve, ', h('a', { href: '#/sign-in' }, 'sign in with a token'), '.'),
    alerts.element,
    list,
    more,
  );
  load();
  return () => cleanup.run();
}
