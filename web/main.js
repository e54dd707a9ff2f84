// The web app's entry: takes a token from the URL fragment, draws the header, and maps
// `#/...` routes to views. Each view renders into <main> and returns a cleanup function
// (streams and timers stop when the reader leaves the page).

import * as session from './session.js';
import { h, replace } from './dom.js';
import { renderEvents } from './views/events.js';
import { renderEvent } from './views/event.js';
import { renderHold } from './views/hold.js';
import { renderReservations } from './views/reservations.js';
import { renderSignIn } from './views/sign_in.js';
import { renderOrganiser, renderManageEvent } from './views/organiser.js';
import { renderSale } from './views/sale.js';

const ROUTES = [
  [/^\/$/, () => renderEvents],
  [/^\/events\/(\d+)$/, () => renderEvent],
  [/^\/reservations$/, () => renderReservations],
  [/^\/reservations\/([0-9a-fA-F-]{36})$/, () => renderHold],
  [/^\/sign-in$/, () => renderSignIn],
  [/^\/organise$/, () => renderOrganiser],
  [/^\/organise\/events\/(\d+)$/, () => renderManageEvent],
  [/^\/organise\/events\/(\d+)\/sale$/, () => renderSale],
];

let cleanup = null;

function navigation() {
  const links = [
    ['#/', 'Events'],
    ['#/reservations', 'My reservations'],
  ];
  if (session.isAdmin()) links.push(['#/organise', 'Organiser']);
  const current = `#${currentPath()}`;
  return links.map(([href, text]) =>
    h('a', { href, 'aria-current': current === href || (href !== '#/' && current.startsWith(href)) ? 'page' : null }, text),
  );
}

function who() {
  const claims = session.claims();
  if (!claims) return h('a', { class: 'button small', href: '#/sign-in' }, 'Sign in');
  const role = Array.isArray(claims.role) ? claims.role.join(', ') : claims.role;
  const expired = claims.exp && claims.exp * 1000 < Date.now();
  return [
    expired ? h('a', { class: 'badge expired-token', href: '#/sign-in' }, 'Token expired') : null,
    h('span', { class: 'identity' }, h('span', { class: 'sr-only' }, 'Signed in as '), claims.sub, ' ', h('span', { class: 'role' }, role)),
    h('a', { class: 'button small', href: '#/sign-in' }, 'Token'),
    h('button', {
      class: 'small',
      type: 'button',
      onclick: () => {
        session.signOut();
        window.location.hash = '#/sign-in';
        render();
      },
    }, 'Sign out'),
  ];
}

function currentPath() {
  const hash = window.location.hash;
  return hash.startsWith('#/') ? hash.slice(1) : '/';
}

function render() {
  if (cleanup) cleanup();
  cleanup = null;
  replace(document.getElementById('nav'), navigation());
  replace(document.getElementById('who'), who());
  const main = document.getElementById('main');
  const path = currentPath();
  for (const [pattern, view] of ROUTES) {
    const match = pattern.exec(path);
    if (match) {
      main.replaceChildren();
      cleanup = view()(main, match.slice(1)) || null;
      const heading = main.querySelector('h1');
      if (heading) {
        heading.setAttribute('tabindex', '-1');
        heading.focus({ preventScroll: true });
        document.title = `${heading.textContent} · Stampede`;
      }
      return;
    }
  }
  replace(main, h('h1', {}, 'Not found'), h('p', {}, 'There is no such page. ', h('a', { href: '#/' }, 'See the events.')));
}

session.adoptFragmentToken();
window.addEventListener('hashchange', () => {
  if (session.adoptFragmentToken()) return render();
  if (window.location.hash === '' || window.location.hash.startsWith('#/')) render();
  return undefined;
});
render();
