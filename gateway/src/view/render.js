// The live log page's drawing: the page's state, and the one render loop that touches the DOM
// once per animation frame. It draws only the rows on screen, each only in the columns in view
// and with a bounded number of styled spans, and scales the scroll past Chrome's height limit.

import { PLAIN, capSpans, paletteColour, parseAnsi, sliceSpans } from './ansi.js';
import { LogModel, findAll, formatDuration, lengthOf, markHits } from './model.js';

/** `HH:MM:SS.mmm` in UTC, as the gateway stamps records. */
export function formatTime(ms) {
  return Number.isFinite(ms) ? new Date(ms).toISOString().slice(11, 23) : '';
}

/** Time since the first record: `+m:ss.s`, or `+h:mm:ss` past an hour. */
export function formatElapsed(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '';
  const s = ms / 1000;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (h > 0) return `+${h}:${String(m).padStart(2, '0')}:${String(Math.floor(sec)).padStart(2, '0')}`;
  return `+${m}:${sec.toFixed(1).padStart(4, '0')}`;
}


/** The tallest spacer the page sets: well under Chrome's element-height limit (~33.5 M px). */
export const MAX_SCROLL_PX = 16000000;

/**
 * The scroll geometry of `total` px of rows in a scroller `viewPx` high: the spacer's height,
 * and `k`, the rows' px per scrolled px (1 until the limit; past it the scroll is scaled so
 * the last row is still reached).
 */
export function scrollScale(total, viewPx, max = MAX_SCROLL_PX) {
  if (total <= max || max <= viewPx) return { spacer: total, k: 1 };
  return { spacer: max, k: (total - viewPx) / (max - viewPx) };
}

/** Styled spans (elements) drawn per row at most; past it the row's text goes plain. */
export const MAX_SPANS = 16;
/** Lines longer than this many columns are drawn only around the columns in view. */
export const LONG_LINE = 1000;
/** The step of that window, so small horizontal scrolls redraw nothing. */
const CHUNK = 256;
/** Rows drawn above and below the visible ones. */
const OVERSCAN = 5;
/** Parsed lines kept for redrawing (a wrapped line's rows share one parse). */
const PARSED_MAX = 256;

/** Everything the page knows; exported so the browser tests can look inside. */
export const view = {
  model: new LogModel(),
  token: null,
  status: null,
  exitCode: null,
  finished: false,
  lastSeq: 0,
  /** The stream's last event id, as sent: opaque (the seq is in each record's JSON). */
  lastEventId: '',
  /** The worker that holds the EventSource. */
  worker: null,
  /** Streams the page opened (the browser's own reconnects not counted). */
  connects: 0,
  /** The wait before the page's next reconnect after a refused stream, ms. */
  backoff: 0,
  conn: 'connecting',
  /** Why the token was refused, from the gateway's answer. */
  refusal: '',
  /** Why the gateway could not read the job's records (its `event: error`). */
  storeError: '',
  following: true,
  atBottom: true,
  showTimes: false,
  wrap: false,
  selection: null, // [first, last] line numbers
  hit: -1, // the current hit
  searches: 0, // bumped per search, so an older one stops
  searching: false,
  pendingHit: 0, // next (1) or previous (-1) asked before the search found anything
  dirty: true,
  /** Bumped when every row must be redrawn (fold, search, selection, timestamps). */
  epoch: 0,
  scrollTo: -1, // a row to bring into view on the next frame
  scrollToCol: -1, // a column to bring into view on the next frame
  keep: null, // {entry, offset}: an entry to keep at `offset` px from the top, after a fold
  /** Rows' px per scrolled px (see `scrollScale`). */
  scale: 1,
  /** The width of one column of log text, px. */
  chPx: 8,
  /** The first column of long lines' drawn window, a multiple of CHUNK. */
  hchunk: 0,
  /** Columns the log shows across. */
  viewCols: 140,
  /** The height of every row, px (the stylesheet's --row-h). */
  rowH: 20,
  /** Where the log was scrolled at the last look: a move up stops the follow. */
  lastScrollTop: 0,
};

export const $ = (id) => document.getElementById(id);
let framePending = false;
/** `{spans, lower}` of recently drawn entries, oldest first. */
const parsed = new Map();

/** Asks for one frame; everything that changes the DOM waits for it. */
export function schedule() {
  view.dirty = true;
  if (!framePending) {
    framePending = true;
    requestAnimationFrame(frame);
  }
}

/** The rows' px at the top of the scroller. */
export function virtualTop() {
  return $('log').scrollTop * view.scale;
}

export function setVirtualTop(px) {
  $('log').scrollTop = Math.max(0, px / view.scale);
}

/** Width of the line-number (and time) columns, px. */
export function gutterPx() {
  return (7 + (view.showTimes ? 25 : 0)) * view.chPx;
}

/** Columns of text a row holds when lines wrap. */
export function wrapCols() {
  const usable = $('log').clientWidth - 16; // the row's right padding
  return Math.max(20, Math.floor(usable / view.chPx) - 7 - (view.showTimes ? 25 : 0) - 1);
}

/** The render loop's one step: spacer height, follow, the visible rows, the header. */
function frame() {
  framePending = false;
  if (!view.dirty) return;
  view.dirty = false;
  const log = $('log');
  const { model } = view;
  const { rows } = model;
  const viewPx = log.clientHeight;
  const geo = scrollScale(rows.length * view.rowH, viewPx);
  view.scale = geo.k;
  $('spacer').style.height = `${geo.spacer}px`;
  if (view.keep) {
    // A fold or a wrap changed the rows: keep this entry where the reader saw it.
    setVirtualTop(Math.max(0, model.rowOf(view.keep.entry)) * view.rowH - view.keep.offset);
    view.keep = null;
  } else if (view.scrollTo >= 0) {
    setVirtualTop(view.scrollTo * view.rowH - viewPx / 3);
    view.scrollTo = -1;
  } else if (view.following) {
    log.scrollTop = log.scrollHeight;
  }
  view.lastScrollTop = log.scrollTop;
  view.atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - view.rowH;
  const col = Math.max(0, (log.scrollLeft - gutterPx()) / view.chPx);
  view.hchunk = Math.floor(col / CHUNK) * CHUNK;
  // Read here, never while rows are half drawn: a layout then would see a row emptied and
  // clamp the sideways scroll to the rows left.
  view.viewCols = Math.ceil(log.clientWidth / view.chPx);
  const top = virtualTop();
  const first = Math.max(0, Math.floor(top / view.rowH) - OVERSCAN);
  const boxTop = log.scrollTop + first * view.rowH - top;
  let count = Math.max(0, Math.min(rows.length - first, Math.ceil(viewPx / view.rowH) + 2 * OVERSCAN));
  // Never past the spacer's end: rows there would make the scroller taller than the log.
  count = Math.min(count, Math.max(0, Math.floor((geo.spacer - boxTop) / view.rowH)));
  const box = $('rows');
  box.style.transform = `translateY(${boxTop}px)`;
  while (box.children.length > count) box.lastChild.remove();
  while (box.children.length < count) box.appendChild(document.createElement('div'));
  for (let k = 0; k < count; k++) drawRow(box.children[k], first + k);
  if (view.scrollToCol >= 0) {
    // After drawing: the row that makes the log this wide is there now.
    const x = gutterPx() + view.scrollToCol * view.chPx;
    log.scrollLeft = x > log.clientWidth * 0.8 ? x - log.clientWidth / 3 : 0;
    view.scrollToCol = -1;
    if (Math.floor(Math.max(0, (log.scrollLeft - gutterPx()) / view.chPx) / CHUNK) * CHUNK !== view.hchunk) schedule();
  }
  drawHeader();
}

/** Draws row `r` into `el`, unless `el` already shows it at this epoch. */
function drawRow(el, r) {
  const { model } = view;
  const i = model.rows[r];
  const seg = model.segOf(r);
  const e = model.entries[i];
  const g = e.head >= 0 ? model.groups[e.head] : null;
  const long = model.cols === 0 && lengthOf(e) > LONG_LINE;
  const key = `${i}:${seg}:${long ? view.hchunk : ''}:${view.epoch}:${g ? `${g.open}${g.size}:${g.end}` : ''}`;
  if (el.dataset.key === key) return;
  el.dataset.key = key;
  el.textContent = '';
  el.className = `row ${e.kind} ${e.stream} ${e.cls}${seg > 0 ? ' cont' : ''}`;
  if (e.kind !== 'marker' && view.selection && e.n >= view.selection[0] && e.n <= view.selection[1]) {
    el.classList.add('selected');
  }
  const ln = document.createElement('a');
  ln.className = 'ln';
  if (e.n > 0 && seg === 0) {
    ln.textContent = String(e.n);
    ln.href = `#L${e.n}`;
    ln.dataset.n = String(e.n);
  }
  el.appendChild(ln);
  if (view.showTimes) {
    const t = document.createElement('span');
    t.className = 'time';
    const d = document.createElement('span');
    d.className = 'elapsed';
    if (seg === 0) {
      t.textContent = formatTime(e.ts);
      d.textContent = formatElapsed(e.ts - view.model.firstTs);
    }
    el.append(t, d);
  }
  let into = el;
  if (g) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'fold';
    b.dataset.group = String(e.head);
    b.setAttribute('aria-expanded', String(g.open));
    b.textContent = g.open ? '\u25be ' : '\u25b8 ';
    el.appendChild(b);
    into = b;
  }
  const text = document.createElement('span');
  text.className = 'text';
  let a = 0;
  let b = Infinity;
  if (model.cols > 0) {
    a = seg * model.cols;
    b = a + model.cols;
  } else if (long) {
    // Only the columns around the view; the row keeps the line's whole width for scrolling.
    a = Math.max(0, view.hchunk - 64);
    b = view.hchunk + CHUNK + 64 + view.viewCols;
    text.classList.add('window');
    text.style.width = `${lengthOf(e)}ch`;
    text.style.paddingLeft = `${a}ch`;
  }
  appendSpans(text, rowSpans(i, e, a, b));
  into.appendChild(text);
  if (g) {
    const size = document.createElement('span');
    size.className = 'size';
    size.textContent = ` ${g.size} line${g.size === 1 ? '' : 's'}`;
    const dur = document.createElement('span');
    dur.className = 'dur';
    dur.textContent = formatDuration(g.end - g.start);
    into.append(size, dur);
  }
}

/** Forgets every parse (the entries they belong to are gone: a reset). */
export function forgetParsed() {
  parsed.clear();
}

/**
 * Entry `i` parsed for its first `upto` columns at least, once for all its rows and redraws
 * (a few hundred kept): a long line seen only at its start is parsed only there.
 */
function parsedOf(i, e, upto) {
  let p = parsed.get(i);
  if (p && p.upto >= upto) {
    parsed.delete(i);
    parsed.set(i, p);
    return p;
  }
  // Past the first window a line is parsed whole: scrolling along it parses it once.
  const limit = p || upto === Infinity ? Infinity : upto;
  parsed.delete(i);
  p = { spans: e.kind === 'marker' ? [{ text: e.text, style: PLAIN }] : parseAnsi(e.text, limit), upto: limit, lower: null };
  parsed.set(i, p);
  if (parsed.size > PARSED_MAX) parsed.delete(parsed.keys().next().value);
  return p;
}

/** The styled spans of columns `[a, b)` of entry `i`, split at search hits, capped. */
function rowSpans(i, e, a, b) {
  const p = parsedOf(i, e, b);
  let spans = a === 0 && b >= lengthOf(e) ? p.spans : sliceSpans(p.spans, a, b);
  const { model } = view;
  if (model.query !== '' && e.kind !== 'marker') {
    p.lower ??= p.spans.map((s) => s.text).join('').toLowerCase();
    const cur = view.hit >= 0 && model.hitEntry[view.hit] === i ? model.hitStart[view.hit] : -1;
    const q = model.query.length;
    const ranges = [];
    for (const s of findAll(p.lower, model.query)) {
      if (s + q <= a) continue;
      if (s >= b) break;
      ranges.push([Math.max(s, a) - a, Math.min(s + q, b) - a, s === cur]);
    }
    spans = markHits(spans, ranges);
  }
  return capSpans(spans, MAX_SPANS);
}

/** Appends each span as a DOM text node in a styled `<span>`: text never becomes markup. */
function appendSpans(parent, spans) {
  for (const s of spans) {
    const st = s.style;
    if (st === PLAIN && !s.hit) {
      parent.appendChild(document.createTextNode(s.text));
      continue;
    }
    const el = document.createElement(s.hit ? 'mark' : 'span');
    if (s.hit) el.className = s.hit;
    let [fg, bg] = st.inverse ? [st.bg, st.fg] : [st.fg, st.bg];
    if (st.inverse) el.classList.add(fg === null ? 'inv-fg' : 'x', bg === null ? 'inv-bg' : 'x');
    if (typeof fg === 'number' && fg < 16) el.classList.add(`f${fg}`);
    else if (fg !== null) el.style.color = typeof fg === 'number' ? paletteColour(fg) : fg;
    if (typeof bg === 'number' && bg < 16) el.classList.add(`b${bg}`);
    else if (bg !== null) el.style.backgroundColor = typeof bg === 'number' ? paletteColour(bg) : bg;
    if (st.bold) el.classList.add('bold');
    if (st.dim) el.classList.add('dim');
    if (st.italic) el.classList.add('italic');
    if (st.underline) el.classList.add('underline');
    if (st.strike) el.classList.add('strike');
    el.textContent = s.text;
    parent.appendChild(el);
  }
}

/** The badge, the connection notice, the counts and the jump button. */
function drawHeader() {
  const badge = $('badge');
  const status = view.conn === 'denied'
    ? 'refused'
    : view.status ?? (view.model.lines > 0 ? 'running' : 'waiting');
  const label = view.exitCode === null ? status : `${status} \u00b7 exit ${view.exitCode}`;
  if (badge.textContent !== label) badge.textContent = label;
  badge.dataset.status = status;
  document.title = `${label} \u00b7 ${jobName()} \u00b7 Tailgate`;
  document.body.dataset.conn = view.conn;
  const conn = $('conn');
  const notice = {
    reconnecting: 'connection lost, reconnecting\u2026',
    failing: `the gateway cannot read this job's log: ${view.storeError}; retrying\u2026`,
    denied: `the token was refused: ${view.refusal || 'no reason given'}; open the page with a fresh #token=`,
    missing: 'no token: open this page as \u2026/view#token=<jwt>',
  }[view.conn];
  conn.hidden = !notice;
  if (notice && conn.textContent !== notice) conn.textContent = notice;
  const count = $('count');
  count.textContent = `${view.model.lines.toLocaleString('en')} lines`;
  count.dataset.lines = String(view.model.lines);
  const { model } = view;
  const more = model.hitTotal > model.hitEntry.length ? '+' : '';
  $('hits').textContent = model.query === ''
    ? ''
    : view.searching
      ? `${model.hitTotal} found, searching\u2026`
      : model.hitTotal === 0
        ? 'no matches'
        : view.hit < 0
          ? `${model.hitTotal}${more} match${model.hitTotal === 1 ? '' : 'es'}`
          : `${view.hit + 1} of ${model.hitTotal}${more}`;
  const folds = $('folds');
  if (folds.hidden !== (model.groups.length === 0)) folds.hidden = model.groups.length === 0;
  // Hidden by visibility, so the bar never reflows (and the log never moves) for it.
  $('jump').classList.toggle('off', view.following || view.atBottom);
}

export function jobName() {
  const parts = location.pathname.split('/');
  return parts[parts.length - 2] || '';
}

/** The width of one column of log text, measured in the log's own font. */
export function measure() {
  view.rowH = Number.parseFloat(getComputedStyle(document.documentElement).getPropertyValue('--row-h')) || 20;
  const probe = document.createElement('span');
  probe.className = 'probe';
  probe.textContent = '0'.repeat(100);
  $('log').appendChild(probe);
  view.chPx = probe.getBoundingClientRect().width / 100 || 8;
  probe.remove();
}

/** Before the rows change shape (wrap, all folds): keep the top entry where it is. */
export function keepTop() {
  const { rows } = view.model;
  const r = Math.floor(virtualTop() / view.rowH);
  if (view.following || r < 0 || r >= rows.length) return;
  view.keep = { entry: rows[r], offset: view.model.rowOf(rows[r]) * view.rowH - virtualTop() };
}

