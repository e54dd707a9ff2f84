// The organiser's pages (admin token): create an event; on an event, add counted and
// seated categories (with the seat-map editor) and set the waiting room.

import * as api from '../api.js';
import * as session from '../session.js';
import { h, replace, alertArea, busy, field } from '../dom.js';
import { count, dateTime, fromLocalInput, money, toLocalInput } from '../format.js';
import { Cleanup } from '../live.js';
import { eventCard } from './events.js';
import { SeatMapEditor } from './seat_map_editor.js';

function needsAdmin(main) {
  if (session.isAdmin()) return false;
  main.append(
    h('h1', {}, 'Organiser'),
    h('p', { class: 'notice' }, 'The organiser pages need an admin token. ', h('a', { href: '#/sign-in' }, 'Sign in with one.')),
  );
  return true;
}

function submitButton(text) {
  return h('button', { type: 'submit', class: 'primary' }, text);
}

function newEventForm() {
  const alerts = alertArea();
  const intent = new api.Intent();
  const inAMonth = new Date(Date.now() + 30 * 24 * 3600 * 1000);
  inAMonth.setMinutes(0, 0, 0);
  const name = h('input', { type: 'text', required: true, maxlength: 200, autocomplete: 'off' });
  const venue = h('input', { type: 'text', required: true, maxlength: 200, autocomplete: 'off' });
  const startsAt = h('input', { type: 'datetime-local', required: true, value: toLocalInput(inAMonth) });
  const saleStartsAt = h('input', { type: 'datetime-local' });
  const saleEndsAt = h('input', { type: 'datetime-local' });
  const create = submitButton('Create the event');
  const form = h(
    'form',
    { class: 'card', 'aria-labelledby': 'new-event' },
    h('h2', { id: 'new-event' }, 'New event'),
    field('Name', name),
    field('Venue', venue),
    field('Starts at', startsAt, 'Your local time'),
    h('div', { class: 'two' }, field('Sale opens', saleStartsAt, 'Empty: at once'), field('Sale closes', saleEndsAt, 'Empty: never')),
    alerts.element,
    create,
  );
  form.addEventListener('submit', (submitted) => {
    submitted.preventDefault();
    const body = {
      name: name.value.trim(),
      venue: venue.value.trim(),
      starts_at: fromLocalInput(startsAt.value),
      sale_starts_at: fromLocalInput(saleStartsAt.value),
      sale_ends_at: fromLocalInput(saleEndsAt.value),
    };
    alerts.clear();
    busy(create, async () => {
      try {
        const created = (await api.call('POST', '/events', { body, intent })).body;
        window.location.hash = `#/organise/events/${created.id}`;
      } catch (problem) {
        alerts.show(problem);
      }
    });
  });
  return form;
}

/** `#/organise`: the new-event form and every event. */
export function renderOrganiser(main) {
  if (needsAdmin(main)) return null;
  const cleanup = new Cleanup();
  const list = h('ul', { class: 'cards', 'aria-label': 'Events' });
  main.append(h('h1', {}, 'Organiser'), newEventForm(), h('h2', {}, 'Events'), list);
  (async () => {
    try {
      let after = null;
      do {
        const page = await api.get(`/events?limit=100${after ? `&after=${after}` : ''}`);
        if (cleanup.closed) return;
        list.append(...page.events.map(eventCard));
        after = page.next_after;
      } while (after !== null);
    } catch (problem) {
      list.append(h('li', {}, problem.detail));
    }
  })();
  return () => cleanup.run();
}

/** The inputs of the category form, with the price preview and the kind switch wired. */
function categoryInputs(event) {
  const inputs = {
    name: h('input', { type: 'text', required: true, maxlength: 100, autocomplete: 'off' }),
    price: h('input', { type: 'number', min: 0, value: 5000, required: true, inputmode: 'numeric' }),
    currency: h('input', { type: 'text', value: 'USD', maxlength: 3, size: 4, pattern: '[A-Z]{3}', autocomplete: 'off' }),
    maxPerUser: h('input', { type: 'number', min: 1, inputmode: 'numeric', placeholder: 'min(10, quota)' }),
    quota: h('input', { type: 'number', min: 1, max: 10000000, value: 100, inputmode: 'numeric' }),
    counted: h('input', { type: 'radio', name: `kind-${event.id}`, value: 'counted', checked: true }),
    seated: h('input', { type: 'radio', name: `kind-${event.id}`, value: 'seated' }),
    pricePreview: h('small', { class: 'hint', 'aria-live': 'polite' }),
    editor: new SeatMapEditor(),
  };
  const { price, currency, pricePreview, counted, seated, quota, editor } = inputs;
  const updatePreview = () => {
    pricePreview.textContent = /^[A-Z]{3}$/.test(currency.value) ? `= ${money(Number(price.value) || 0, currency.value)}` : '';
  };
  price.addEventListener('input', updatePreview);
  currency.addEventListener('input', updatePreview);
  updatePreview();
  inputs.quotaField = field('Tickets (quota)', quota);
  const showKind = () => {
    inputs.quotaField.hidden = !counted.checked;
    editor.element.hidden = counted.checked;
  };
  counted.addEventListener('change', showKind);
  seated.addEventListener('change', showKind);
  showKind();
  return inputs;
}

/** The request body from the category form. */
function categoryBody(inputs) {
  const body = { name: inputs.name.value.trim(), price: Number(inputs.price.value), currency: inputs.currency.value.trim() || 'USD' };
  if (inputs.maxPerUser.value) body.max_per_user = Number(inputs.maxPerUser.value);
  if (inputs.counted.checked) body.quota = Number(inputs.quota.value);
  else body.seat_map = inputs.editor.seatMap();
  return body;
}

function categoryForm(event, onCreated) {
  const alerts = alertArea();
  const intent = new api.Intent();
  const inputs = categoryInputs(event);
  const add = submitButton('Add the category');
  const form = h(
    'form',
    { class: 'card', 'aria-labelledby': `new-category-${event.id}` },
    h('h2', { id: `new-category-${event.id}` }, 'Add a category'),
    field('Name', inputs.name),
    h('div', { class: 'two' },
      h('div', {}, field('Price (minor units, such as cents)', inputs.price), inputs.pricePreview),
      field('Currency', inputs.currency, 'Three capital letters')),
    field('At most per person', inputs.maxPerUser, 'Empty: 10, or the quota when smaller'),
    h('fieldset', { class: 'kind' }, h('legend', {}, 'Kind'),
      h('label', {}, inputs.counted, ' Counted: a number of tickets'),
      h('label', {}, inputs.seated, ' Seated: a seat map')),
    inputs.quotaField,
    inputs.editor.element,
    alerts.element,
    add,
  );
  form.addEventListener('submit', (submitted) => {
    submitted.preventDefault();
    const body = categoryBody(inputs);
    alerts.clear();
    busy(add, async () => {
      try {
        const category = (await api.call('POST', `/events/${event.id}/ticket-category`, { body, intent })).body;
        intent.reset();
        inputs.name.value = '';
        alerts.success(`Added ${category.name}: ${count(category.quota)} tickets, on sale now.`);
        onCreated(category);
      } catch (problem) {
        alerts.show(problem);
      }
    });
  });
  return form;
}

function waitingRoomForm(event) {
  const alerts = alertArea();
  const enabled = h('input', { type: 'checkbox' });
  const rate = h('input', { type: 'number', min: 1, max: 100000, inputmode: 'numeric' });
  const ttl = h('input', { type: 'number', min: 5, max: 86400, inputmode: 'numeric' });
  const state = h('p', { class: 'muted', 'data-field': 'room-state' });
  const save = submitButton('Save the waiting room');
  const showRoom = (room) => {
    enabled.checked = room.enabled;
    rate.value = room.admit_per_second;
    ttl.value = room.pass_ttl_seconds;
    state.textContent = `${room.enabled ? 'On' : 'Off'} · opens ${dateTime(room.opens_at)} · ${count(room.waiting)} waiting · ${count(room.admitted)} admitted so far`;
  };
  const form = h(
    'form',
    { class: 'card', 'aria-labelledby': `room-form-${event.id}` },
    h('h2', { id: `room-form-${event.id}` }, 'Waiting room'),
    state,
    h('label', { class: 'check' }, enabled, ' On: buyers queue and reserve with a pass'),
    h('div', { class: 'two' }, field('Let in per second', rate, '1 to 100,000'), field('Pass valid for (seconds)', ttl, '5 to 86,400')),
    alerts.element,
    save,
  );
  form.addEventListener('submit', (submitted) => {
    submitted.preventDefault();
    const body = { enabled: enabled.checked, admit_per_second: Number(rate.value), pass_ttl_seconds: Number(ttl.value) };
    alerts.clear();
    busy(save, async () => {
      try {
        showRoom((await api.call('PUT', `/events/${event.id}/waiting-room`, { body })).body);
        alerts.success(body.enabled ? `The waiting room is on: ${count(body.admit_per_second)} let in per second.` : 'The waiting room is off: everyone may reserve.');
      } catch (problem) {
        alerts.show(problem);
      }
    });
  });
  api.get(`/events/${event.id}/waiting-room`).then(showRoom, (problem) => alerts.show(problem));
  return form;
}

function categoryList(event) {
  const list = h('ul', { class: 'category-list' });
  const add = (category) => {
    const kind = category.seat_map
      ? `${category.seat_map.length} rows, ${count(category.quota)} seats (${category.seat_map.map((row) => `${row.row}: ${row.seats}`).join(', ')})`
      : `${count(category.quota)} tickets`;
    list.append(h('li', { 'data-category-id': category.id }, h('strong', {}, category.name), ` · ${money(category.price, category.currency)} · ${kind} · at most ${category.max_per_user} per person`));
  };
  event.categories.forEach(add);
  return { element: list, add };
}

/** `#/organise/events/{id}`: an event's categories and waiting room. */
export function renderManageEvent(main, [eventId]) {
  if (needsAdmin(main)) return null;
  const alerts = alertArea();
  const heading = h('h1', {}, 'Event');
  const content = h('div', { class: 'manage' });
  main.append(h('p', { class: 'crumbs' }, h('a', { href: '#/organise' }, '← Organiser')), heading, alerts.element, content);
  api.get(`/events/${eventId}`).then(
    (event) => {
      heading.textContent = event.name;
      const categories = categoryList(event);
      replace(
        content,
        h('p', { class: 'muted' }, event.venue, ' · ', dateTime(event.starts_at)),
        h('p', { class: 'actions' },
          h('a', { class: 'button primary', href: `#/organise/events/${event.id}/sale` }, 'Watch the sale live'),
          h('a', { class: 'button', href: `#/events/${event.id}` }, 'Buyer\u2019s page')),
        h('section', { class: 'card', 'aria-labelledby': 'categories-heading' }, h('h2', { id: 'categories-heading' }, 'Categories'), categories.element),
        categoryForm(event, categories.add),
        waitingRoomForm(event),
      );
    },
    (problem) => alerts.show(problem),
  );
  return null;
}
