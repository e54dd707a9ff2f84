// A seated category's map: one button per seat, rows in map order. Click (or Enter or
// Space) picks a seat; the arrow keys move between seats, so the whole map is one tab stop.
// Taken seats come from `GET /categories/{id}/seats` and are redrawn in place.

import { h } from '../dom.js';

/**
 * `seatMap` is the category's `[{row, seats}]`. `onChange(selected)` runs when the
 * selection changes. Returns `{element, setTaken(rowsDocument) → seats lost from the
 * selection, selected(), clear()}`.
 */
export function seatMapView(seatMap, maxSelectable, onChange) {
  const buttons = new Map(); // "A-3" → button
  const grid = []; // rows of buttons, for the arrow keys
  const selected = new Set();
  const taken = new Set();
  let focusName = null;

  function label(name) {
    const state = taken.has(name) ? 'taken' : selected.has(name) ? 'selected' : 'free';
    return `Seat ${name}, ${state}`;
  }

  function paint(name) {
    const button = buttons.get(name);
    const isTaken = taken.has(name);
    button.setAttribute('class', isTaken ? 'seat taken' : selected.has(name) ? 'seat selected' : 'seat');
    button.setAttribute('aria-pressed', selected.has(name) ? 'true' : 'false');
    button.setAttribute('aria-disabled', isTaken ? 'true' : 'false');
    button.setAttribute('aria-label', label(name));
    button.title = label(name);
  }

  function toggle(name) {
    if (taken.has(name)) return;
    if (selected.has(name)) selected.delete(name);
    else if (selected.size >= maxSelectable) {
      onChange([...selected], `You can pick at most ${maxSelectable} seats in this category.`);
      return;
    } else selected.add(name);
    paint(name);
    onChange([...selected]);
  }

  function moveFocus(rowIndex, seatIndex) {
    const row = grid[Math.max(0, Math.min(grid.length - 1, rowIndex))];
    const button = row[Math.max(0, Math.min(row.length - 1, seatIndex))];
    if (focusName) buttons.get(focusName).tabIndex = -1;
    button.tabIndex = 0;
    focusName = button.dataset.seat;
    button.focus();
  }

  function onKey(event) {
    const button = event.target.closest('button.seat');
    if (!button) return;
    const rowIndex = Number(button.dataset.rowIndex);
    const seatIndex = Number(button.dataset.seatIndex);
    const moves = {
      ArrowLeft: [rowIndex, seatIndex - 1],
      ArrowRight: [rowIndex, seatIndex + 1],
      ArrowUp: [rowIndex - 1, seatIndex],
      ArrowDown: [rowIndex + 1, seatIndex],
      Home: [rowIndex, 0],
      End: [rowIndex, Infinity],
    };
    if (!moves[event.key]) return;
    event.preventDefault();
    moveFocus(...moves[event.key]);
  }

  const rows = seatMap.map((row, rowIndex) => {
    const seats = [];
    for (let number = 1; number <= row.seats; number += 1) {
      const name = `${row.row}-${number}`;
      const button = h('button', {
        type: 'button',
        class: 'seat',
        tabindex: -1,
        'data-seat': name,
        'data-row-index': rowIndex,
        'data-seat-index': number - 1,
      }, String(number));
      button.addEventListener('click', () => toggle(name));
      buttons.set(name, button);
      seats.push(button);
      paint(name);
    }
    grid.push(seats);
    return h('div', { class: 'seat-row' }, h('span', { class: 'row-label', 'aria-hidden': 'true' }, row.row), h('div', { class: 'seats', role: 'group', 'aria-label': `Row ${row.row}` }, seats));
  });
  if (grid.length && grid[0].length) {
    grid[0][0].tabIndex = 0;
    focusName = grid[0][0].dataset.seat;
  }
  const element = h(
    'div',
    { class: 'seat-map' },
    h('p', { class: 'stage', 'aria-hidden': 'true' }, 'Stage'),
    h('div', { class: 'seat-rows', onkeydown: onKey }, rows),
    h(
      'p',
      { class: 'legend' },
      h('span', { class: 'seat sample' }, ''), ' free ',
      h('span', { class: 'seat sample selected' }, ''), ' your pick ',
      h('span', { class: 'seat sample taken' }, ''), ' taken',
    ),
  );

  return {
    element,
    /** Marks the seats of `GET /categories/{id}/seats`; returns picked seats that someone else took. */
    setTaken(document) {
      const now = new Set();
      for (const row of document.rows) for (const number of row.taken) now.add(`${row.row}-${number}`);
      const lost = [];
      for (const name of buttons.keys()) {
        const was = taken.has(name);
        const is = now.has(name);
        if (is && selected.has(name)) {
          selected.delete(name);
          lost.push(name);
        }
        if (was !== is) {
          if (is) taken.add(name);
          else taken.delete(name);
          paint(name);
        } else if (lost.includes(name)) paint(name);
      }
      if (lost.length) onChange([...selected]);
      return lost;
    },
    selected: () => [...selected],
    clear() {
      const names = [...selected];
      selected.clear();
      names.forEach(paint);
      onChange([]);
    },
  };
}
