// Pasting a token. It is kept in this tab's sessionStorage only, and sent as a Bearer
// token to this API only.

import * as session from '../session.js';
import { h, alertArea, field } from '../dom.js';
import { dateTime } from '../format.js';

export function renderSignIn(main) {
  const alerts = alertArea();
  const input = h('textarea', { rows: 4, spellcheck: 'false', autocomplete: 'off', placeholder: 'eyJhbGciOi…' });
  const current = session.claims();
  const form = h(
    'form',
    {
      class: 'card',
      onsubmit: (event) => {
        event.preventDefault();
        try {
          session.setToken(input.value);
          window.location.hash = session.isAdmin() ? '#/organise' : '#/';
        } catch (error) {
          alerts.show({ status: 0, code: 'invalid_token', title: 'Not a token', detail: error.message, errors: [] }, 'Paste the whole JWT: three parts separated by dots.');
        }
      },
    },
    field('Token (JWT)', input, 'An admin token opens the organiser pages; a user token lets you buy.'),
    h('button', { type: 'submit', class: 'primary' }, 'Use this token'),
  );
  main.append(
    h('h1', {}, 'Sign in'),
    current
      ? h('p', { class: 'notice' }, `Signed in as ${current.sub} (${current.role})`, current.exp ? `, until ${dateTime(new Date(current.exp * 1000).toISOString())}` : '', '.')
      : null,
    alerts.element,
    form,
    h('p', { class: 'muted' }, 'You can also open the app with the token in the address: ', h('code', {}, '/app/#token=<JWT>'), '. The app moves it into this tab\u2019s session storage and removes it from the address, so it is gone when the tab closes. ', h('code', {}, 'scripts/run'), ' prints such links with development tokens.'),
  );
  return null;
}
