// Tailgate's live log page. Pure functions live beside it (`ansi.js`: ANSI parsing and span
// work; `model.js`: sections, the log model, search) and are re-exported here for the tests;
// this module holds the small formatters, the one render loop that touches the DOM once per
// animation frame, the stream (in a worker running this same module) and the controls. No
// framework, no build.

import { PLAIN, capSpans, paletteColour, parseAnsi, sliceSpans } from './ansi.js';
import { LogModel, findAll, formatDuration, lengthOf, markHits } from './model.js';

export * from './ansi.js';
export * from './model.js';

// ---------------------------------------------------------------------------------------
// The URL fragment and small formatters.

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


export const TERMINAL = new Set(['succeeded', 'failed', 'cancelled', 'expired', 'released', 'lost']);

/**
 * Why a token was refused, for the notice: the `error_description` of `WWW-Authenticate`
 * (401), else the JSON body's message (403: another job's token), else a generic reason.
 */
export function refusalReason(challenge, body, status) {
  const m = /error_description="([^"]{1,200})"/.exec(challenge ?? '');
  if (m) return m[1];
  if (body && typeof body.message === 'string' && body.message !== '') return body.message.slice(0, 200);
  return status === 403 ? 'the token does not allow this' : 'the token is not valid';
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

// ---------------------------------------------------------------------------------------
// The page: state, the render loop, the stream, the controls.

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
};

const $ = (id) => document.getElementById(id);
let rowHeight = 20;
let framePending = false;
let lastScrollTop = 0;
/** `{spans, lower}` of recently drawn entries, oldest first. */
const parsed = new Map();

/** Asks for one frame; everything that changes the DOM waits for it. */
function schedule() {
  view.dirty = true;
  if (!framePending) {
    framePending = true;
    requestAnimationFrame(frame);
  }
}

/** The rows' px at the top of the scroller. */
function virtualTop() {
  return $('log').scrollTop * view.scale;
}

function setVirtualTop(px) {
  $('log').scrollTop = Math.max(0, px / view.scale);
}

/** Width of the line-number (and time) columns, px. */
function gutterPx() {
  return (7 + (view.showTimes ? 25 : 0)) * view.chPx;
}

/** Columns of text a row holds when lines wrap. */
function wrapCols() {
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
  const geo = scrollScale(rows.length * rowHeight, viewPx);
  view.scale = geo.k;
  $('spacer').style.height = `${geo.spacer}px`;
  if (view.keep) {
    // A fold or a wrap changed the rows: keep this entry where the reader saw it.
    setVirtualTop(Math.max(0, model.rowOf(view.keep.entry)) * rowHeight - view.keep.offset);
    view.keep = null;
  } else if (view.scrollTo >= 0) {
    setVirtualTop(view.scrollTo * rowHeight - viewPx / 3);
    view.scrollTo = -1;
  } else if (view.following) {
    log.scrollTop = log.scrollHeight;
  }
  if (view.scrollToCol >= 0) {
    const x = gutterPx() + view.scrollToCol * view.chPx;
    log.scrollLeft = x > log.clientWidth * 0.8 ? x - log.clientWidth / 3 : 0;
    view.scrollToCol = -1;
  }
  lastScrollTop = log.scrollTop;
  view.atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - rowHeight;
  const col = Math.max(0, (log.scrollLeft - gutterPx()) / view.chPx);
  view.hchunk = Math.floor(col / CHUNK) * CHUNK;
  const top = virtualTop();
  const first = Math.max(0, Math.floor(top / rowHeight) - OVERSCAN);
  const boxTop = log.scrollTop + first * rowHeight - top;
  let count = Math.max(0, Math.min(rows.length - first, Math.ceil(viewPx / rowHeight) + 2 * OVERSCAN));
  // Never past the spacer's end: rows there would make the scroller taller than the log.
  count = Math.min(count, Math.max(0, Math.floor((geo.spacer - boxTop) / rowHeight)));
  const box = $('rows');
  box.style.transform = `translateY(${boxTop}px)`;
  while (box.children.length > count) box.lastChild.remove();
  while (box.children.length < count) box.appendChild(document.createElement('div'));
  for (let k = 0; k < count; k++) drawRow(box.children[k], first + k);
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
    b = view.hchunk + CHUNK + 64 + Math.ceil($('log').clientWidth / view.chPx);
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

function jobName() {
  const parts = location.pathname.split('/');
  return parts[parts.length - 2] || '';
}

// ---------------------------------------------------------------------------------------
// The stream: an EventSource with the token as `?token=`, resuming with Last-Event-ID. It runs
// in a worker (this same module), so the browser's per-event work and the JSON decoding stay
// off the page's main thread; the page gets the records in batches.

/** Records per message from the worker: each message is one short task on the page. */
const BATCH = 500;

/** The worker's side: one EventSource at a time, as the page asks. */
function runStream(scope) {
  let source = null;
  let pending = [];
  let flushQueued = false;
  const flush = () => {
    flushQueued = false;
    while (pending.length > 0) scope.postMessage({ records: pending.splice(0, BATCH) });
  };
  const push = (rec) => {
    pending.push(rec);
    if (!flushQueued) {
      flushQueued = true;
      setTimeout(flush, 0);
    }
  };
  scope.onmessage = ({ data }) => {
    if (source) source.close();
    source = null;
    if (!data.url) return;
    const es = new EventSource(data.url);
    source = es;
    es.onopen = () => {
      flush();
      scope.postMessage({ conn: 'live' });
    };
    for (const event of ['log', 'status', 'custom', 'gap', 'reset']) {
      es.addEventListener(event, (ev) => {
        const rec = JSON.parse(ev.data);
        rec.event = event;
        // The id is opaque (it may name the job's life): kept as sent, never parsed.
        rec.id = ev.lastEventId;
        push(rec);
        if (event === 'status' && rec.final) {
          es.close(); // the job is over: nothing to reconnect to
          flush();
        }
      });
    }
    es.onerror = () => {
      if (source !== es) return;
      flush();
      // CONNECTING: the browser retries by itself. CLOSED: it gave up (a refusal).
      scope.postMessage({ conn: es.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting' });
    };
  };
}

/** The page's side: what each record does to the model. */
function receive(rec) {
  const { model } = view;
  if (rec.id) view.lastEventId = rec.id;
  if (rec.event === 'gap') {
    model.addMarker('gap', `records ${rec.from}\u2013${rec.to} are no longer held by the gateway`);
    model.skipLines(rec.to - rec.from + 1);
    view.lastSeq = Math.max(view.lastSeq, rec.to);
    return;
  }
  if (rec.event === 'reset') {
    // The gateway no longer knows our position (it lost the job's earlier life): start over.
    model.reset();
    parsed.clear();
    view.lastSeq = 0;
    runSearch();
    model.addMarker('reset', 'the gateway restarted this log from its beginning');
    return;
  }
  if (rec.seq <= view.lastSeq) return; // already shown: a resume never doubles a line
  view.lastSeq = rec.seq;
  if (rec.event === 'log') {
    model.addLine(rec);
    if (view.pendingLines && model.lines >= view.pendingLines[0]) selectLines(view.pendingLines);
  } else if (rec.event === 'custom') {
    model.addMarker('custom', `${rec.kind}: ${JSON.stringify(rec.data)}`, rec.seq, Date.parse(rec.ts));
  } else if (rec.event === 'status') {
    view.status = rec.status;
    view.exitCode = rec.exit_code ?? null;
    if (rec.final || TERMINAL.has(rec.status)) {
      // Asked before the status row closes the open group: where the job was when it failed.
      const failure = rec.status === 'failed' ? model.failure() : null;
      const code = view.exitCode === null ? '' : ` (exit ${view.exitCode})`;
      model.addMarker(`status ${rec.status}`, `job ${rec.status}${code}`, rec.seq, Date.parse(rec.ts));
      if (failure) revealFailure(failure);
      finish();
    }
  }
}

/**
 * A job failed: open the group it failed in (or the last one) and, unless the reader has
 * moved or picked lines, bring its first error into view, as GitHub Actions and Buildkite do.
 */
function revealFailure({ group, entry }) {
  const { model } = view;
  if (group < 0) return;
  model.setOpen(group, true);
  view.epoch += 1;
  if (entry >= 0 && view.following && !view.selection && !view.pendingLines) {
    view.following = false;
    view.scrollTo = model.rowOf(entry);
  }
}

/** One of the job's routes named in the page's `data-*` attributes, as an absolute URL. */
function link(attr) {
  const url = new URL(document.body.dataset[attr], location.href);
  url.hash = '';
  return url;
}

/** Opens the stream after the last event shown (exported for the tests' 204 case). */
export function connect() {
  const url = link('stream');
  url.searchParams.set('token', view.token);
  if (view.lastEventId !== '') url.searchParams.set('last_event_id', view.lastEventId);
  else if (view.lastSeq > 0) url.searchParams.set('last_event_id', String(view.lastSeq));
  view.connects += 1;
  view.worker.postMessage({ url: url.href });
}

function startWorker() {
  view.worker = new Worker(import.meta.url, { type: 'module' });
  view.worker.onmessage = ({ data }) => {
    if (data.records) {
      for (const rec of data.records) receive(rec);
    } else if (!view.finished) {
      view.conn = data.conn;
      if (data.conn === 'live') view.backoff = 0;
      if (data.conn === 'closed') retryLater();
    }
    schedule();
  };
}

/** The job ended: close the stream so nothing reconnects. */
function finish() {
  view.finished = true;
  view.conn = 'done';
  view.worker.postMessage({ url: null });
}

/** After a refused stream: stop for a bad token or a job read to its end, else retry. */
async function retryLater() {
  let reply = null;
  try {
    const r = await fetch(link('status'), { headers: { authorization: `Bearer ${view.token}` } });
    let body = null;
    try {
      body = await r.json();
    } catch {
      body = null; // not JSON (a proxy's page): the status says enough
    }
    reply = { status: r.status, ok: r.ok, body, challenge: r.headers.get('www-authenticate') };
  } catch {
    reply = null; // the gateway is away: try again later
  }
  if (reply && (reply.status === 401 || reply.status === 403)) {
    view.conn = 'denied';
    view.refusal = refusalReason(reply.challenge, reply.body, reply.status);
    schedule();
    return;
  }
  const body = reply && reply.ok ? reply.body : null;
  if (body && TERMINAL.has(body.status) && body.last_seq <= view.lastSeq) {
    view.status = body.status;
    view.exitCode = body.exit_code ?? null;
    finish();
    schedule();
    return;
  }
  view.backoff = Math.min(30000, (view.backoff || 1000) * 2);
  setTimeout(connect, view.backoff);
}

/**
 * The raw log, fetched with the token in a header (never in a URL, which would end up in
 * history and proxy logs) and offered as a download from a blob.
 */
async function downloadRaw(ev) {
  ev.preventDefault();
  const a = $('raw');
  if (a.dataset.busy === '1' || !view.token) return;
  a.dataset.busy = '1';
  try {
    const r = await fetch(link('raw'), { headers: { authorization: `Bearer ${view.token}` } });
    if (!r.ok) {
      a.title = `the gateway answered ${r.status}`;
      return;
    }
    const url = URL.createObjectURL(await r.blob());
    const save = document.createElement('a');
    save.href = url;
    save.download = `${jobName()}.log`;
    document.body.appendChild(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    a.title = '';
  } catch {
    a.title = 'the gateway could not be reached';
  } finally {
    a.dataset.busy = '0';
  }
}

// ---------------------------------------------------------------------------------------
// Controls: follow, folds, line links, search, timestamps, wrap.

function selectLines(lines) {
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

function runSearch() {
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

/** Before the rows change shape (wrap, all folds): keep the top entry where it is. */
function keepTop() {
  const { rows } = view.model;
  const r = Math.floor(virtualTop() / rowHeight);
  if (view.following || r < 0 || r >= rows.length) return;
  view.keep = { entry: rows[r], offset: view.model.rowOf(rows[r]) * rowHeight - virtualTop() };
}

/** Wraps long lines at the log's width, or not. */
function applyWrap() {
  keepTop();
  view.model.setWrap(view.wrap ? wrapCols() : 0);
  document.body.classList.toggle('wrap', view.wrap);
  view.epoch += 1;
  schedule();
}

/** The width of one column of log text, measured in the log's own font. */
function measure() {
  const probe = document.createElement('span');
  probe.className = 'probe';
  probe.textContent = '0'.repeat(100);
  $('log').appendChild(probe);
  view.chPx = probe.getBoundingClientRect().width / 100 || 8;
  probe.remove();
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
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - rowHeight;
    if (log.scrollTop < lastScrollTop && !atBottom) view.following = false;
    else if (atBottom) view.following = true;
    lastScrollTop = log.scrollTop;
    schedule();
  }, { passive: true });
  log.addEventListener('click', (ev) => {
    const fold = ev.target.closest('button.fold');
    if (fold) {
      const g = Number(fold.dataset.group);
      const entry = view.model.groups[g].entry;
      const offset = view.model.rowOf(entry) * rowHeight - virtualTop();
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
  rowHeight = Number.parseFloat(getComputedStyle(document.documentElement).getPropertyValue('--row-h')) || 20;
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

if (typeof document !== 'undefined') {
  if (document.body && document.body.dataset.stream) start();
} else if (typeof WorkerGlobalScope !== 'undefined' && self instanceof WorkerGlobalScope) {
  runStream(self);
}
