// The caller's token, and what this tab remembers: everything lives in sessionStorage,
// so it goes when the tab closes and is never shared with another tab.

const TOKEN_KEY = 'stampede.token';
const PASS_PREFIX = 'stampede.pass.';
const RESERVATIONS_KEY = 'stampede.reservations';
const RESERVATIONS_KEPT = 50;

function decodePart(part) {
  const base64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
  const bytes = Uint8Array.from(atob(base64), (character) => character.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

/**
 * The claims of a JWT, read without verifying it (the API verifies; the page only uses
 * them to show who is signed in and which pages apply). Throws on a malformed token.
 */
export function claimsOf(token) {
  const parts = token.split('.');
  if (parts.length !== 3) throw new Error('a token has three parts separated by dots');
  const claims = decodePart(parts[1]);
  if (typeof claims.sub !== 'string') throw new Error('the token has no subject (sub)');
  return claims;
}

/** Takes a token from the URL fragment (`#token=...`) into session storage, and removes it from the URL. */
export function adoptFragmentToken() {
  const match = /^#token=([^&]*)(?:&(.*))?$/.exec(window.location.hash);
  if (!match) return false;
  const token = decodeURIComponent(match[1]);
  const next = match[2] && match[2].startsWith('/') ? `#${match[2]}` : '#/';
  try {
    setToken(token);
  } catch {
    // A malformed token is dropped; the sign-in page explains.
  }
  // The token must not stay in the address bar, the history or a bookmark.
  window.history.replaceState(null, '', `${window.location.pathname}${window.location.search}${next}`);
  return true;
}

/** Stores a token after checking it reads as a JWT. */
export function setToken(token) {
  const trimmed = token.trim().replace(/^Bearer\s+/i, '');
  claimsOf(trimmed);
  sessionStorage.setItem(TOKEN_KEY, trimmed);
}

/** The token, or null. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** `{sub, role, exp}` of the current token, or null. */
export function claims() {
  const current = token();
  if (!current) return null;
  try {
    return claimsOf(current);
  } catch {
    return null;
  }
}

/** Whether the current token says admin (a role claim that is, or contains, "admin"). */
export function isAdmin() {
  const role = claims()?.role;
  return role === 'admin' || (Array.isArray(role) && role.includes('admin'));
}

/** Forgets the token and everything this tab remembered. */
export function signOut() {
  sessionStorage.clear();
}

/** The queue pass this tab holds for an event, while it is valid. */
export function queuePass(eventId) {
  const stored = sessionStorage.getItem(PASS_PREFIX + eventId);
  if (!stored) return null;
  const pass = JSON.parse(stored);
  if (pass.sub !== claims()?.sub || Date.parse(pass.expires_at) <= Date.now()) return null;
  return pass;
}

/** Remembers the caller's pass for an event. */
export function rememberQueuePass(eventId, pass, expiresAt) {
  sessionStorage.setItem(PASS_PREFIX + eventId, JSON.stringify({ pass, expires_at: expiresAt, sub: claims()?.sub }));
}

/** Forgets the pass for an event (refused, expired). */
export function forgetQueuePass(eventId) {
  sessionStorage.removeItem(PASS_PREFIX + eventId);
}

/** Ids of the reservations made in this tab, newest first. */
export function knownReservations() {
  const list = JSON.parse(sessionStorage.getItem(RESERVATIONS_KEY) || '[]');
  return list.filter((entry) => entry.sub === claims()?.sub).map((entry) => entry.id);
}

/** Remembers a reservation made in this tab, so "My reservations" shows it before the database has it. */
export function rememberReservation(id) {
  const list = JSON.parse(sessionStorage.getItem(RESERVATIONS_KEY) || '[]').filter((entry) => entry.id !== id);
  list.unshift({ id, sub: claims()?.sub });
  sessionStorage.setItem(RESERVATIONS_KEY, JSON.stringify(list.slice(0, RESERVATIONS_KEPT)));
}
