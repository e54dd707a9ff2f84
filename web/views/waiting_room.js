// The waiting room of an event, from the buyer's side: join, wait with the position and a
// countdown to the next check (the API's Retry-After), and once admitted keep the pass
// (used automatically by every reserve) with its expiry.

import * as api from '../api.js';
import * as session from '../session.js';
import { h, replace, alertArea, busy } from '../dom.js';
import { clockTime, countdown, count } from '../format.js';
import { every } from '../live.js';

const ROOM_REFRESH_MS = 10000;
const DEFAULT_RETRY_SECONDS = 2;

/**
 * The panel of event `eventId`. `onChange()` runs whenever whether the caller may
 * reserve changes. Returns `{element, required(), pass(), refused()}`.
 */
export function waitingRoomPanel(eventId, cleanup, onChange) {
  const element = h('section', { class: 'card waiting-room', 'aria-labelledby': `room-${eventId}`, hidden: true });
  const alerts = alertArea();
  let room = null;
  let status = null; // the caller's QueueStatus, or null when not joined
  let nextCheck = null; // server time of the next poll, while waiting
  let pollTimer = null;
  let line = null; // the element the ticker rewrites

  const required = () => Boolean(room && room.enabled);
  const pass = () => (required() ? session.queuePass(eventId)?.pass ?? null : null);

  function schedulePoll(seconds) {
    clearTimeout(pollTimer);
    nextCheck = api.serverNow() + seconds * 1000;
    pollTimer = setTimeout(poll, seconds * 1000);
  }

  function apply(queueStatus, retryAfter) {
    status = queueStatus;
    if (status.status === 'admitted' && status.pass) {
      session.rememberQueuePass(eventId, status.pass, status.pass_expires_at);
    } else {
      session.forgetQueuePass(eventId);
    }
    if (status.status === 'waiting' || status.status === 'sold_out') schedulePoll(retryAfter || DEFAULT_RETRY_SECONDS);
    else nextCheck = null;
    draw();
    onChange();
  }

  async function poll() {
    if (cleanup.closed) return;
    try {
      const result = await api.call('GET', `/events/${eventId}/queue`);
      if (!cleanup.closed) apply(result.body, Number(result.headers.get('retry-after')));
    } catch (problem) {
      if (problem.code === 'not_found') {
        status = null;
        draw();
      } else {
        alerts.show(problem);
        schedulePoll(problem.retryAfter || 5);
      }
    }
  }

  async function join(button) {
    alerts.clear();
    await busy(button, async () => {
      try {
        const result = await api.call('POST', `/events/${eventId}/queue`);
        apply(result.body, Number(result.headers.get('retry-after')));
      } catch (problem) {
        alerts.show(problem, problem.code === 'sale_closed' ? 'The sale has ended, so the queue no longer takes anyone.' : null);
      }
    });
  }

  function joinButton(text) {
    const button = h('button', { type: 'button', class: 'primary' }, text);
    button.addEventListener('click', () => join(button));
    return button;
  }

  function body() {
    if (!session.token()) {
      return [h('p', {}, 'This sale has a waiting room. ', h('a', { href: '#/sign-in' }, 'Sign in'), ' to join the queue.')];
    }
    const held = session.queuePass(eventId);
    if (held) {
      line = h('p', { class: 'countdown', 'data-pass-expires': held.expires_at });
      return [
        h('p', { class: 'big' }, 'It is your turn.'),
        h('p', {}, 'Your pass is used automatically when you reserve. It expires at ', h('strong', {}, clockTime(held.expires_at)), '.'),
        line,
      ];
    }
    if (!status) {
      return [
        h('p', {}, `This sale has a waiting room: ${count(room.waiting)} waiting now, ${count(room.admit_per_second)} let in per second. Join the queue; when it is your turn you get a pass and can reserve.`),
        joinButton('Join the queue'),
      ];
    }
    if (status.status === 'expired' || status.status === 'admitted') {
      return [h('p', {}, 'Your pass has expired. Join again to get back in the queue (at the back).'), joinButton('Join again')];
    }
    line = h('p', { class: 'countdown' });
    if (status.status === 'sold_out') {
      return [h('p', { class: 'big' }, 'Sold out for now'), h('p', {}, 'Every category is sold out. You keep your place in case tickets come back.'), line];
    }
    if (status.position === null) {
      return [h('p', { class: 'big' }, 'You are in the queue.'), h('p', {}, `The queue opens at ${clockTime(room.opens_at)}; everyone who joined before then gets a random place.`), line];
    }
    return [
      h('p', { class: 'big' }, 'You are number ', h('strong', { 'data-field': 'position' }, count(status.position)), ' in the queue.'),
      h('p', {}, `About ${count(room.admit_per_second)} people are let in per second. Keep this page open.`),
      line,
    ];
  }

  function tick() {
    if (!line) return;
    const held = session.queuePass(eventId);
    if (line.dataset.passExpires) {
      if (!held) {
        // The pass just ran out.
        status = { status: 'expired' };
        draw();
        onChange();
        return;
      }
      line.textContent = `${countdown(Date.parse(held.expires_at) - Date.now())} left on your pass`;
    } else if (nextCheck) {
      line.textContent = `Checking again in ${countdown(nextCheck - api.serverNow())}`;
    }
  }

  function draw() {
    element.hidden = !required();
    if (!required()) return;
    const state = session.queuePass(eventId) ? 'admitted' : status ? status.status : session.token() ? 'not_joined' : 'signed_out';
    element.dataset.queueState = state;
    line = null;
    replace(element, h('h2', { id: `room-${eventId}` }, 'Waiting room'), alerts.element, body());
    tick();
  }

  async function refreshRoom() {
    try {
      const fresh = await api.get(`/events/${eventId}/waiting-room`);
      if (cleanup.closed) return;
      const changed = !room || room.enabled !== fresh.enabled;
      const waitingChanged = room && room.waiting !== fresh.waiting;
      room = fresh;
      if (changed && required() && session.token() && !session.queuePass(eventId) && !status) await poll();
      if (changed) onChange();
      // Redrawing would take the focus from a button the reader is on.
      if (changed || (waitingChanged && !status && !element.contains(document.activeElement))) draw();
    } catch (problem) {
      alerts.show(problem);
    }
  }

  cleanup.add(() => clearTimeout(pollTimer));
  cleanup.add(every(ROOM_REFRESH_MS, refreshRoom));
  cleanup.add(every(250, tick));
  return {
    element,
    required,
    pass,
    /** A reserve answered 403 queue_pass_required: the pass is gone; ask the API where the caller stands. */
    refused() {
      session.forgetQueuePass(eventId);
      status = null;
      refreshRoom().then(() => (session.token() ? poll() : null));
    },
  };
}
