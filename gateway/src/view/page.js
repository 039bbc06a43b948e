// Tailgate's live log page: the controls (follow, folds, line links, search, timestamps,
// wrap) and the start. The rest sits beside it, one concern per module: `ansi.js` (ANSI
// parsing and span work), `model.js` (sections, the log model, search), `render.js` (state and
// the render loop) and `stream.js` (the worker's EventSource and the records). All are pure or
// small functions, re-exported here for the tests. No framework, no build.

import {
  $, jobName, keepTop, measure, schedule, view, virtualTop, wrapCols,
} from './render.js';
import { connect, downloadRaw, link, startWorker } from './stream.js';

export * from './ansi.js';
export * from './model.js';
export * from './render.js';
export * from './stream.js';

// ---------------------------------------------------------------------------------------
// The URL fragment.

/** `#token=...&L5-L9` as `{token, lines: [5, 9]}`; either part may be missing. */
export function parseFragment(hash) {
  const out = { token: null, lines: null };
  for (const part of hash.replace(/^#/, '').split('&')) {
    if (part.startsWith('token=')) {
      out.token = decodeURIComponent(part.slice(6));
      continue;
    }
    const m = /^L(\d+)(?:-L?(\d+))?$/.exec(part);
    if (m) {
      const a = Number(m[1]);
      const b = m[2] ? Number(m[2]) : a;
      out.lines = [Math.min(a, b), Math.max(a, b)];
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Controls: follow, folds, line links, search, timestamps, wrap.

export function selectLines(lines) {
  const i = view.model.entryOfLine(lines[0]);
  if (i < 0) {
    view.pendingLines = lines; // not arrived yet: select when it does
    return;
  }
  view.pendingLines = null;
  view.selection = lines;
  view.following = false;
  view.scrollTo = view.model.rowOf(i);
  view.epoch += 1;
  schedule();
}

function onHash() {
  const { lines } = parseFragment(location.hash);
  if (lines) selectLines(lines);
}

function gotoHit(step) {
  const { model } = view;
  const n = model.hitEntry.length;
  if (n === 0) {
    if (view.searching) view.pendingHit = step; // go there once the search finds one
    return;
  }
  view.hit = view.hit < 0 ? (step > 0 ? 0 : n - 1) : (view.hit + step + n) % n;
  view.following = false;
  const start = model.hitStart[view.hit];
  const row = model.rowOf(model.hitEntry[view.hit]);
  if (model.cols > 0) view.scrollTo = row + Math.floor(start / model.cols);
  else {
    view.scrollTo = row;
    view.scrollToCol = start;
  }
  view.epoch += 1;
  schedule();
}

/** Entries one search step reads, and the characters: small enough to keep each task short. */
const SEARCH_STEP = 20000;
const SEARCH_CHARS = 2000000;

export function runSearch() {
  view.model.startSearch($('q').value);
  view.hit = -1;
  view.epoch += 1;
  const generation = ++view.searches;
  const step = () => {
    if (generation !== view.searches) return; // a newer search replaced this one
    view.searching = !view.model.searchSome(SEARCH_STEP, SEARCH_CHARS);
    if (view.pendingHit && (view.model.hitEntry.length > 0 || !view.searching)) {
      const dir = view.pendingHit;
      view.pendingHit = 0;
      gotoHit(dir);
    }
    schedule();
    if (view.searching) setTimeout(step, 0);
  };
  step();
}

/** Wraps long lines at the log's width, or not. */
function applyWrap() {
  keepTop();
  view.model.setWrap(view.wrap ? wrapCols() : 0);
  document.body.classList.toggle('wrap', view.wrap);
  view.epoch += 1;
  schedule();
}

/** A remembered checkbox: its state from localStorage, `apply` on each change. */
function setting(id, key, apply) {
  const box = $(id);
  box.checked = localStorage.getItem(key) === '1';
  apply(box.checked);
  box.addEventListener('change', () => {
    localStorage.setItem(key, box.checked ? '1' : '0');
    apply(box.checked);
  });
}

function wire() {
  const log = $('log');
  log.addEventListener('scroll', () => {
    // Our own scrolls land at the bottom; a reader moving up stops the follow.
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - view.rowH;
    if (log.scrollTop < view.lastScrollTop && !atBottom) view.following = false;
    else if (atBottom) view.following = true;
    view.lastScrollTop = log.scrollTop;
    schedule();
  }, { passive: true });
  log.addEventListener('click', (ev) => {
    const fold = ev.target.closest('button.fold');
    if (fold) {
      const g = Number(fold.dataset.group);
      const entry = view.model.groups[g].entry;
      const offset = view.model.rowOf(entry) * view.rowH - virtualTop();
      view.model.setOpen(g, !view.model.groups[g].open);
      view.keep = { entry, offset };
      view.following = false;
      view.epoch += 1;
      schedule();
      return;
    }
    const ln = ev.target.closest('a.ln');
    if (ln && ln.dataset.n && ev.shiftKey && view.selection) {
      ev.preventDefault();
      const n = Number(ln.dataset.n);
      const a = Math.min(view.selection[0], n);
      const b = Math.max(view.selection[0], n);
      history.replaceState(null, '', `#L${a}-L${b}`);
      view.selection = [a, b];
      view.epoch += 1;
      schedule();
    }
  });
  $('jump').addEventListener('click', () => {
    view.following = true;
    schedule();
  });
  for (const [id, open] of [['expand', true], ['collapse', false]]) {
    $(id).addEventListener('click', () => {
      keepTop();
      view.model.setAllOpen(open);
      view.epoch += 1;
      schedule();
    });
  }
  $('q').addEventListener('input', runSearch);
  $('search').addEventListener('submit', (ev) => {
    ev.preventDefault();
    gotoHit(1);
  });
  $('prev').addEventListener('click', () => gotoHit(-1));
  $('q').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && ev.shiftKey) {
      ev.preventDefault();
      gotoHit(-1);
    } else if (ev.key === 'Escape') {
      $('q').value = '';
      runSearch();
    }
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === '/' && document.activeElement !== $('q')) {
      ev.preventDefault();
      $('q').focus();
    }
  });
  setting('times', 'tailgate.times', (on) => {
    view.showTimes = on;
    document.body.classList.toggle('times', on);
    if (view.wrap) applyWrap();
    view.epoch += 1;
    schedule();
  });
  setting('wrap', 'tailgate.wrap', (on) => {
    view.wrap = on;
    applyWrap();
  });
  $('raw').addEventListener('click', downloadRaw);
  window.addEventListener('hashchange', onHash);
  window.addEventListener('resize', () => {
    if (view.wrap && wrapCols() !== view.model.cols) applyWrap();
    schedule();
  });
}

function start() {
  $('job').textContent = jobName();
  measure();
  wire();
  // The token leaves the address bar (so a shared or screenshotted URL carries none) and
  // waits in this tab's session storage for a reload.
  const key = `tailgate.token:${location.pathname}`;
  const fragment = parseFragment(location.hash);
  view.token = fragment.token ?? sessionStorage.getItem(key);
  const keep = fragment.lines ? `#L${fragment.lines[0]}${fragment.lines[1] > fragment.lines[0] ? `-L${fragment.lines[1]}` : ''}` : '';
  history.replaceState(null, '', `${location.pathname}${location.search}${keep}`);
  // The link names the log without a token; a click fetches it with the header.
  $('raw').href = link('raw').href;
  $('raw').setAttribute('download', `${jobName()}.log`);
  if (!view.token) {
    view.conn = 'missing';
    schedule();
    return;
  }
  sessionStorage.setItem(key, view.token);
  if (fragment.lines) selectLines(fragment.lines);
  startWorker();
  connect();
  schedule();
}

if (typeof document !== 'undefined' && document.body && document.body.dataset.stream) start();
