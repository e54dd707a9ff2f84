// Things that change by themselves: the availability stream and countdown ticks.

const STREAM_STATES = {
  connecting: 'Connecting to the live stream…',
  live: 'Live',
  reconnecting: 'Reconnecting to the live stream…',
};

const REOPEN_DELAY_MS = [1000, 2000, 5000, 10000, 30000];

/**
 * Follows `GET /events/{id}/availability/stream`: `onAvailability(document)` for every
 * message (the first comes at once), `onState(state, text)` when the connection changes.
 * The browser reconnects by itself (sending Last-Event-ID) after a dropped connection;
 * after a refusal (a 503 when the server holds too many streams) it gives up, so this
 * opens a new stream after a growing delay. Returns a function that closes it.
 */
export function followAvailability(eventId, onAvailability, onState) {
  const report = (state) => onState && onState(state, STREAM_STATES[state]);
  let source = null;
  let timer = null;
  let failures = 0;
  const open = () => {
    source = new EventSource(`/events/${encodeURIComponent(eventId)}/availability/stream`);
    source.addEventListener('open', () => report('live'));
    source.addEventListener('availability', (message) => {
      failures = 0;
      report('live');
      onAvailability(JSON.parse(message.data));
    });
    source.addEventListener('error', () => {
      if (source.readyState !== EventSource.CLOSED) {
        report('reconnecting');
        return;
      }
      report('reconnecting');
      timer = setTimeout(open, REOPEN_DELAY_MS[Math.min(failures, REOPEN_DELAY_MS.length - 1)]);
      failures += 1;
    });
  };
  report('connecting');
  open();
  return () => {
    clearTimeout(timer);
    source.close();
  };
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
