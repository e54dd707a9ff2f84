// The organiser's seat-map editor: rows with a name and a number of seats, a quick fill,
// and a preview. It yields the `seat_map` of `POST /events/{id}/ticket-category`.

import { h, replace, field } from '../dom.js';
import { count } from '../format.js';

const ROW_SEATS_MAX = 1000;
const ROWS_MAX = 1000;
const SEATS_MAX = 100000;
const PREVIEW_SEATS_MAX = 60;

/** Row names A..Z, then AA, AB, ... */
function rowName(index) {
  let name = '';
  let rest = index;
  do {
    name = String.fromCharCode(65 + (rest % 26)) + name;
    rest = Math.floor(rest / 26) - 1;
  } while (rest >= 0);
  return name;
}

/** Problems with a map, as the API would name them. */
function check(map, seats) {
  const found = [];
  const names = new Set();
  map.forEach((row, index) => {
    if (!/^[A-Za-z0-9]{1,8}$/.test(row.row)) found.push(`Row ${index + 1}: a name is 1 to 8 letters or digits.`);
    else if (names.has(row.row)) found.push(`Row ${index + 1}: ${row.row} is named twice.`);
    names.add(row.row);
    if (!Number.isInteger(row.seats) || row.seats < 1 || row.seats > ROW_SEATS_MAX) found.push(`Row ${index + 1}: 1 to ${ROW_SEATS_MAX} seats.`);
  });
  if (!map.length) found.push('Add at least one row.');
  if (map.length > ROWS_MAX) found.push(`At most ${ROWS_MAX} rows.`);
  if (seats > SEATS_MAX) found.push(`At most ${count(SEATS_MAX)} seats in all.`);
  return found;
}

function previewRow(row) {
  return h('div', { class: 'preview-row' }, h('span', { class: 'row-label' }, row.row),
    Array.from({ length: Math.min(row.seats || 0, PREVIEW_SEATS_MAX) }, () => h('span', { class: 'dot' })),
    row.seats > PREVIEW_SEATS_MAX ? h('span', { class: 'muted small' }, ` +${row.seats - PREVIEW_SEATS_MAX}`) : null);
}

/** The editor; `element` is its fieldset and `seatMap()` the map as entered. */
export class SeatMapEditor {
  constructor() {
    this.rows = []; // {nameInput, seatsInput, element}
    this.list = h('ol', { class: 'editor-rows', 'aria-label': 'Rows' });
    this.total = h('p', { class: 'total', 'aria-live': 'polite' });
    this.preview = h('div', { class: 'preview', 'aria-hidden': 'true' });
    this.problems = h('ul', { class: 'editor-problems' });
    this.addRow('A', 10);
    this.addRow('B', 10);
    this.refresh();
    this.element = h(
      'fieldset',
      { class: 'seat-map-editor' },
      h('legend', {}, 'Seat map'),
      this.quickFill(),
      this.list,
      this.addButton(),
      this.total,
      this.problems,
      h('p', { class: 'muted small' }, 'Preview (the stage is at the top):'),
      this.preview,
    );
  }

  quickFill() {
    const fillRows = h('input', { type: 'number', min: 1, max: ROWS_MAX, value: 5, inputmode: 'numeric' });
    const fillSeats = h('input', { type: 'number', min: 1, max: ROW_SEATS_MAX, value: 12, inputmode: 'numeric' });
    const fill = h('button', { type: 'button' }, 'Fill');
    fill.addEventListener('click', () => {
      this.rows.splice(0).forEach((entry) => entry.element.remove());
      const rows = Math.min(Number(fillRows.value) || 0, ROWS_MAX);
      for (let index = 0; index < rows; index += 1) this.addRow(rowName(index), Number(fillSeats.value) || 1);
      this.refresh();
    });
    return h('div', { class: 'inline-form' }, field('Rows', fillRows), field('Seats per row', fillSeats), fill);
  }

  addButton() {
    const add = h('button', { type: 'button' }, 'Add a row');
    add.addEventListener('click', () => {
      const last = this.rows[this.rows.length - 1];
      this.addRow(rowName(this.rows.length), last ? last.seatsInput.value : 10);
      this.refresh();
      this.rows[this.rows.length - 1].nameInput.focus();
    });
    return add;
  }

  addRow(name, seats) {
    const refresh = () => this.refresh();
    const nameInput = h('input', { type: 'text', value: name, maxlength: 8, size: 6, autocomplete: 'off', oninput: refresh });
    const seatsInput = h('input', { type: 'number', value: seats, min: 1, max: ROW_SEATS_MAX, inputmode: 'numeric', oninput: refresh });
    const entry = { nameInput, seatsInput };
    const remove = h('button', { type: 'button', class: 'small', 'aria-label': `Remove row ${name}` }, 'Remove');
    entry.element = h('li', { class: 'editor-row' }, field('Row', nameInput), field('Seats', seatsInput), remove);
    remove.addEventListener('click', () => {
      this.rows.splice(this.rows.indexOf(entry), 1);
      entry.element.remove();
      this.refresh();
    });
    this.rows.push(entry);
    this.list.append(entry.element);
  }

  refresh() {
    const map = this.seatMap();
    const seats = map.reduce((sum, row) => sum + (Number.isInteger(row.seats) ? row.seats : 0), 0);
    this.total.textContent = `${count(map.length)} ${map.length === 1 ? 'row' : 'rows'}, ${count(seats)} seats`;
    replace(this.preview, map.slice(0, 30).map(previewRow));
    replace(this.problems, check(map, seats).map((text) => h('li', {}, text)));
  }

  /** The map as entered: `[{row, seats}]`. */
  seatMap() {
    return this.rows.map((entry) => ({ row: entry.nameInput.value.trim(), seats: Number(entry.seatsInput.value) }));
  }
}
