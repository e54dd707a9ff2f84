// How numbers, money and times read on the page.

const fractionDigits = new Map();

function digitsOf(currency) {
  if (!fractionDigits.has(currency)) {
    let digits = 2;
    try {
      digits = new Intl.NumberFormat('en', { style: 'currency', currency }).resolvedOptions().maximumFractionDigits;
    } catch {
      digits = 2;
    }
    fractionDigits.set(currency, digits);
  }
  return fractionDigits.get(currency);
}

/** An amount in the currency's minor unit, as people read it: `150000, "IDR"` → `IDR 150,000`. */
export function money(amount, currency) {
  const digits = digitsOf(currency);
  const major = amount / 10 ** digits;
  try {
    return new Intl.NumberFormat(undefined, { style: 'currency', currency, currencyDisplay: 'code' }).format(major);
  } catch {
    return `${currency} ${major.toFixed(digits)}`;
  }
}

/** A count with thousands separators. */
export function count(value) {
  return new Intl.NumberFormat().format(value);
}

/** An RFC 3339 time in the reader's time zone. */
export function dateTime(iso) {
  if (!iso) return '—';
  return new Date(iso).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

/** A time of day with seconds. */
export function clockTime(iso) {
  return new Date(iso).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** A duration in milliseconds as `m:ss` (or `h:mm:ss`), never negative. */
export function countdown(milliseconds) {
  const total = Math.max(0, Math.ceil(milliseconds / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = String(total % 60).padStart(2, '0');
  return hours > 0 ? `${hours}:${String(minutes).padStart(2, '0')}:${seconds}` : `${minutes}:${seconds}`;
}

/** A `datetime-local` input's value as RFC 3339 UTC, or null when empty. */
export function fromLocalInput(value) {
  return value ? new Date(value).toISOString() : null;
}

/** A Date as a `datetime-local` input's value. */
export function toLocalInput(date) {
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 16);
}
