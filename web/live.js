// Things that change by themselves: the availability stream and countdown ticks.

const STREAM_STATES = {
  connecting: 'Connecting to the live stream…',
  live: 'Live',
  reconnecting: 'Reconnecting to the live stream…',
  closed: 'The live stream is closed; reload the page to try again.',
};

/**
 * Follows `GET /events/{id}/availability/stream`: `onAvailability(document)` for every
 * message (the first comes at once), `onState(state, text)` when the connection changes.
 * The browser reconnects by itself, sending Last-Event-ID. Returns a function that closes it.
 */
export function followAvailability(eventId, onAvailability, onState) {
  const source = new EventSource(`/events/${encodeURIComponent(eventId)}/availability/stream`);
  const report = (state) => onState && onState(state, STREAM_STATES[state]);
  report('connecting');
  source.addEventListener('open', () => report('live'));
  source.addEventListener('availability', (message) => {
    report('live');
    onAvailability(JSON.parse(message.data));
  });
  source.addEventListener('error', () => report(source.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting'));
  return () => source.close();
}

/** Calls `tick()` now and every `milliseconds` after; returns a function that stops it. */
export function every(milliseconds, tick) {
  tick();
  const timer = setInterval(tick, milliseconds);
  return () => clearInterval(timer);
}

/** Runs cleanup functions once, in reverse order of adding. */
export class Cleanup {
  constructor() {
    this.steps = [];
    this.closed = false;
  }

  add(step) {
    this.steps.push(step);
    return step;
  }

  run() {
    this.closed = true;
    while (this.steps.length) {
      try {
        this.steps.pop()();
      } catch (error) {
        console.error(error);
      }
    }
  }
}
