// The waiting room of an event, from the buyer's side: join, wait with the position and a
// countdown to the next check (the API's Retry-After), and once admitted keep the pass
// (used automatically by every reserve) with its expiry.

import * as api from '../api.js';
import * as session from '../session.js';
import { h, replace, alertArea, busy } from '../dom.js';
import { clockTime, countdown, count } from '../format.js';
import { every } from '../live.js';

const ROOM_REFRESH_MS = 10000;
const TICK_MS = 250;
const DEFAULT_RETRY_SECONDS = 2;
const ERROR_RETRY_SECONDS = 5;

/**
 * The panel of one event. `onChange()` runs whenever whether the caller may reserve
 * changes. `element` is hidden while the room is off.
 */
export class WaitingRoomPanel {
  constructor(eventId, cleanup, onChange) {
    this.eventId = eventId;
    this.cleanup = cleanup;
    this.onChange = onChange;
    this.element = h('section', { class: 'card waiting-room', 'aria-labelledby': `room-${eventId}`, hidden: true });
    this.alerts = alertArea();
    this.room = null; // the event's WaitingRoom
    this.status = null; // the caller's QueueStatus, or null when not joined
    this.nextCheck = null; // server time of the next poll, while waiting
    this.pollTimer = null;
    this.line = null; // the countdown line the ticker rewrites
    cleanup.add(() => clearTimeout(this.pollTimer));
    cleanup.add(every(ROOM_REFRESH_MS, () => this.refreshRoom()));
    cleanup.add(every(TICK_MS, () => this.tick()));
  }

  /** Whether reserving in this event needs a pass now. */
  required() {
    return Boolean(this.room && this.room.enabled);
  }

  /** The caller's valid pass, when one is needed. */
  pass() {
    return this.required() ? session.queuePass(this.eventId)?.pass ?? null : null;
  }

  /** A reserve answered 403 queue_pass_required: the pass is gone; ask the API where the caller stands. */
  refused() {
    session.forgetQueuePass(this.eventId);
    this.status = null;
    this.refreshRoom().then(() => (session.token() ? this.poll() : null));
  }

  schedulePoll(seconds) {
    clearTimeout(this.pollTimer);
    this.nextCheck = api.serverNow() + seconds * 1000;
    this.pollTimer = setTimeout(() => this.poll(), seconds * 1000);
  }

  apply(queueStatus, retryAfter) {
    this.status = queueStatus;
    if (queueStatus.status === 'admitted' && queueStatus.pass) {
      session.rememberQueuePass(this.eventId, queueStatus.pass, queueStatus.pass_expires_at);
    } else {
      session.forgetQueuePass(this.eventId);
    }
    if (queueStatus.status === 'waiting' || queueStatus.status === 'sold_out') this.schedulePoll(retryAfter || DEFAULT_RETRY_SECONDS);
    else this.nextCheck = null;
    this.draw();
    this.onChange();
  }

  async poll() {
    if (this.cleanup.closed) return;
    try {
      const result = await api.call('GET', `/events/${this.eventId}/queue`);
      if (!this.cleanup.closed) this.apply(result.body, Number(result.headers.get('retry-after')));
    } catch (problem) {
      if (problem.code === 'not_found') {
        this.status = null;
        this.draw();
      } else {
        this.alerts.show(problem);
        this.schedulePoll(problem.retryAfter || ERROR_RETRY_SECONDS);
      }
    }
  }

  async join(button) {
    this.alerts.clear();
    await busy(button, async () => {
      try {
        const result = await api.call('POST', `/events/${this.eventId}/queue`);
        this.apply(result.body, Number(result.headers.get('retry-after')));
      } catch (problem) {
        this.alerts.show(problem, problem.code === 'sale_closed' ? 'The sale has ended, so the queue no longer takes anyone.' : null);
      }
    });
  }

  joinButton(text) {
    const button = h('button', { type: 'button', class: 'primary' }, text);
    button.addEventListener('click', () => this.join(button));
    return button;
  }

  /** What the panel says, for where the caller stands. */
  body() {
    if (!session.token()) {
      return [h('p', {}, 'This sale has a waiting room. ', h('a', { href: '#/sign-in' }, 'Sign in'), ' to join the queue.')];
    }
    const held = session.queuePass(this.eventId);
    if (held) {
      this.line = h('p', { class: 'countdown', 'data-pass-expires': held.expires_at });
      return [
        h('p', { class: 'big' }, 'It is your turn.'),
        h('p', {}, 'Your pass is used automatically when you reserve. It expires at ', h('strong', {}, clockTime(held.expires_at)), '.'),
        this.line,
      ];
    }
    const { room, status } = this;
    if (!status) {
      return [
        h('p', {}, `This sale has a waiting room: ${count(room.waiting)} waiting now, ${count(room.admit_per_second)} let in per second. Join the queue; when it is your turn you get a pass and can reserve.`),
        this.joinButton('Join the queue'),
      ];
    }
    if (status.status === 'expired' || status.status === 'admitted') {
      return [h('p', {}, 'Your pass has expired. Join again to get back in the queue (at the back).'), this.joinButton('Join again')];
    }
    this.line = h('p', { class: 'countdown' });
    if (status.status === 'sold_out') {
      return [h('p', { class: 'big' }, 'Sold out for now'), h('p', {}, 'Every category is sold out. You keep your place in case tickets come back.'), this.line];
    }
    if (status.position === null) {
      return [h('p', { class: 'big' }, 'You are in the queue.'), h('p', {}, `The queue opens at ${clockTime(room.opens_at)}; everyone who joined before then gets a random place.`), this.line];
    }
    return [
      h('p', { class: 'big' }, 'You are number ', h('strong', { 'data-field': 'position' }, count(status.position)), ' in the queue.'),
      h('p', {}, `About ${count(room.admit_per_second)} people are let in per second. Keep this page open.`),
      this.line,
    ];
  }

  tick() {
    if (!this.line) return;
    if (this.line.dataset.passExpires) {
      const held = session.queuePass(this.eventId);
      if (!held) {
        // The pass just ran out.
        this.status = { status: 'expired' };
        this.draw();
        this.onChange();
        return;
      }
      this.line.textContent = `${countdown(Date.parse(held.expires_at) - Date.now())} left on your pass`;
    } else if (this.nextCheck) {
      this.line.textContent = `Checking again in ${countdown(this.nextCheck - api.serverNow())}`;
    }
  }

  draw() {
    this.element.hidden = !this.required();
    if (!this.required()) return;
    const admitted = session.queuePass(this.eventId);
    const state = admitted ? 'admitted' : this.status ? this.status.status : session.token() ? 'not_joined' : 'signed_out';
    this.element.dataset.queueState = state;
    this.line = null;
    replace(this.element, h('h2', { id: `room-${this.eventId}` }, 'Waiting room'), this.alerts.element, this.body());
    this.tick();
  }

  async refreshRoom() {
    try {
      const fresh = await api.get(`/events/${this.eventId}/waiting-room`);
      if (this.cleanup.closed) return;
      const changed = !this.room || this.room.enabled !== fresh.enabled;
      const waitingChanged = this.room && this.room.waiting !== fresh.waiting;
      this.room = fresh;
      if (changed && this.required() && session.token() && !session.queuePass(this.eventId) && !this.status) await this.poll();
      if (changed) this.onChange();
      // Redrawing would take the focus from a button the reader is on.
      if (changed || (waitingChanged && !this.status && !this.element.contains(document.activeElement))) this.draw();
    } catch (problem) {
      this.alerts.show(problem);
    }
  }
}
