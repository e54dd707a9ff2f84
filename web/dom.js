// Building the page without markup strings: every element is made with createElement
// and every text goes in as a text node, so nothing a server or a user sends can become
// markup (the page's Content-Security-Policy also forbids it: Trusted Types, no policy).

const SVG_NAMESPACE = 'http://www.w3.org/2000/svg';

const PROPERTIES = new Set(['value', 'checked', 'disabled', 'hidden', 'selected', 'indeterminate']);

function apply(element, props) {
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false && !PROPERTIES.has(name)) continue;
    if (name === 'class') element.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    else if (name === 'text') element.textContent = value;
    else if (name.startsWith('on') && typeof value === 'function') element.addEventListener(name.slice(2), value);
    else if (PROPERTIES.has(name)) element[name] = value;
    else element.setAttribute(name, value === true ? '' : String(value));
  }
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: `h('button', {class: 'primary', onclick}, 'Reserve')`. */
export function h(tag, props, ...children) {
  const element = document.createElement(tag);
  apply(element, props);
  append(element, children);
  return element;
}

/** An SVG element, attributes only (no inline style). */
export function svg(tag, attributes, ...children) {
  const element = document.createElementNS(SVG_NAMESPACE, tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value !== undefined && value !== null) element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

/** Replaces every child of `element`. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

let fieldCounter = 0;

/** A unique id for a label's `for`. */
export function uniqueId(prefix) {
  fieldCounter += 1;
  return `${prefix}-${fieldCounter}`;
}

/** A labelled control: `field('Quantity', h('input', {...}), 'hint')`. */
export function field(label, control, hint) {
  const id = control.id || uniqueId('field');
  control.id = id;
  const hintElement = hint ? h('small', { class: 'hint', id: `${id}-hint` }, hint) : null;
  if (hintElement) control.setAttribute('aria-describedby', hintElement.id);
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hintElement);
}

/**
 * A region that shows a Problem: the API's `detail` (always), its code and status, each
 * field error of a 422, and an explanation when the view has one for the code.
 */
export function alertArea() {
  const element = h('div', { class: 'alert-area', 'aria-live': 'assertive' });
  return {
    element,
    show(problem, explanation) {
      const status = problem.status ? ` (${problem.status})` : '';
      replace(
        element,
        h(
          'div',
          { class: 'alert', role: 'alert' },
          h('p', { class: 'alert-title' }, h('strong', {}, `${problem.title}${status}`), ' ', h('code', {}, problem.code)),
          problem.detail ? h('p', { class: 'alert-detail' }, problem.detail) : null,
          explanation ? h('p', { class: 'alert-explanation' }, explanation) : null,
          problem.errors.length
            ? h('ul', { class: 'alert-errors' }, problem.errors.map((error) => h('li', {}, h('code', {}, error.field), ': ', error.message)))
            : null,
        ),
      );
    },
    success(text) {
      replace(element, h('div', { class: 'notice', role: 'status' }, text));
    },
    clear() {
      element.replaceChildren();
    },
  };
}

/** Disables a button while `work()` runs, so a second click waits for the first. */
export async function busy(button, work) {
  if (button.getAttribute('aria-busy') === 'true') return undefined;
  button.setAttribute('aria-busy', 'true');
  button.disabled = true;
  try {
    return await work();
  } finally {
    button.removeAttribute('aria-busy');
    button.disabled = false;
  }
}
