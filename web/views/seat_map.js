// A seated category's map: one button per seat, rows in map order. Click (or Enter or
// Space) picks a seat; the arrow keys move between seats, so the whole map is one tab stop.
// Taken seats come from `GET /categories/{id}/seats` and are redrawn in place.

import { h } from '../dom.js';

/** The arrow keys' moves, as (row, seat) offsets; Home and End go to the row's ends. */
const MOVES = {
  ArrowLeft: [0, -1],
  ArrowRight: [0, 1],
  ArrowUp: [-1, 0],
  ArrowDown: [1, 0],
  Home: [0, -Infinity],
  End: [0, Infinity],
};

export class SeatMap {
  /**
   * `seatMap` is the category's `[{row, seats}]`. `onChange(selected, message)` runs when
   * the selection changes, or with a message when a pick is refused.
   */
  constructor(seatMap, maxSelectable, onChange) {
    this.maxSelectable = maxSelectable;
    this.onChange = onChange;
    this.buttons = new Map(); // "A-3" → button
    this.grid = []; // rows of buttons, for the arrow keys
    this.picked = new Set();
    this.taken = new Set();
    this.focusName = null;
    const rows = seatMap.map((row, rowIndex) => this.row(row, rowIndex));
    if (this.grid.length && this.grid[0].length) this.setFocus(this.grid[0][0], false);
    this.element = h(
      'div',
      { class: 'seat-map' },
      h('p', { class: 'stage', 'aria-hidden': 'true' }, 'Stage'),
      h('div', { class: 'seat-rows', onkeydown: (event) => this.onKey(event) }, rows),
      h('p', { class: 'legend' },
        h('span', { class: 'seat sample' }, ''), ' free ',
        h('span', { class: 'seat sample selected' }, ''), ' your pick ',
        h('span', { class: 'seat sample taken' }, ''), ' taken'),
    );
  }

  row(row, rowIndex) {
    const seats = [];
    for (let number = 1; number <= row.seats; number += 1) {
      const name = `${row.row}-${number}`;
      const button = h('button', {
        type: 'button', class: 'seat', tabindex: -1, 'data-seat': name, 'data-row-index': rowIndex, 'data-seat-index': number - 1,
      }, String(number));
      button.addEventListener('click', () => this.toggle(name));
      this.buttons.set(name, button);
      seats.push(button);
      this.paint(name);
    }
    this.grid.push(seats);
    return h('div', { class: 'seat-row' },
      h('span', { class: 'row-label', 'aria-hidden': 'true' }, row.row),
      h('div', { class: 'seats', role: 'group', 'aria-label': `Row ${row.row}` }, seats));
  }

  label(name) {
    const state = this.taken.has(name) ? 'taken' : this.picked.has(name) ? 'selected' : 'free';
    return `Seat ${name}, ${state}`;
  }

  paint(name) {
    const button = this.buttons.get(name);
    const taken = this.taken.has(name);
    button.setAttribute('class', taken ? 'seat taken' : this.picked.has(name) ? 'seat selected' : 'seat');
    button.setAttribute('aria-pressed', this.picked.has(name) ? 'true' : 'false');
    button.setAttribute('aria-disabled', taken ? 'true' : 'false');
    button.setAttribute('aria-label', this.label(name));
    button.title = this.label(name);
  }

  toggle(name) {
    if (this.taken.has(name)) return;
    if (this.picked.has(name)) this.picked.delete(name);
    else if (this.picked.size >= this.maxSelectable) {
      this.onChange(this.selected(), `You can pick at most ${this.maxSelectable} seats in this category.`);
      return;
    } else this.picked.add(name);
    this.paint(name);
    this.onChange(this.selected());
  }

  setFocus(button, move = true) {
    if (this.focusName) this.buttons.get(this.focusName).tabIndex = -1;
    button.tabIndex = 0;
    this.focusName = button.dataset.seat;
    if (move) button.focus();
  }

  onKey(event) {
    const button = event.target.closest('button.seat');
    if (!button || !MOVES[event.key]) return;
    event.preventDefault();
    const [rowStep, seatStep] = MOVES[event.key];
    const rowIndex = Math.max(0, Math.min(this.grid.length - 1, Number(button.dataset.rowIndex) + rowStep));
    const row = this.grid[rowIndex];
    const seatIndex = Math.max(0, Math.min(row.length - 1, Number(button.dataset.seatIndex) + seatStep));
    this.setFocus(row[seatIndex]);
  }

  /** Marks the seats of `GET /categories/{id}/seats`; returns picked seats that someone else took. */
  setTaken(document) {
    const now = new Set();
    for (const row of document.rows) for (const number of row.taken) now.add(`${row.row}-${number}`);
    const lost = [];
    for (const name of this.buttons.keys()) {
      const changed = this.taken.has(name) !== now.has(name);
      if (now.has(name) && this.picked.has(name)) {
        this.picked.delete(name);
        lost.push(name);
      }
      if (now.has(name)) this.taken.add(name);
      else this.taken.delete(name);
      if (changed || lost.includes(name)) this.paint(name);
    }
    if (lost.length) this.onChange(this.selected());
    return lost;
  }

  /** The picked seats, in the order they were picked. */
  selected() {
    return [...this.picked];
  }

  clear() {
    const names = this.selected();
    this.picked.clear();
    names.forEach((name) => this.paint(name));
    this.onChange([]);
  }
}
