// Tailgate's live log page. Pure functions first (ANSI parsing with carriage returns, group
// headers, the log model, search, the URL fragment), then the one render loop that touches
// the DOM once per animation frame, then the stream (in a worker running this same module)
// and the controls. No framework, no build.

// ---------------------------------------------------------------------------------------
// ANSI: SGR styles, carriage returns and erase-in-line, as a terminal shows them.

/** The style of text with no SGR applied. Styles are immutable; each SGR makes a new one. */
export const PLAIN = Object.freeze({
  fg: null, bg: null, bold: false, dim: false, italic: false, underline: false,
  inverse: false, strike: false,
});

// CSI (params, final byte), OSC (up to BEL or ST, or the end), charset picks, other ESC x.
const ESCAPE = /\x1b(?:\[([0-?]*)[ -/]*([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[()*+].|[@-Z\\-_]|$)/g;
// C0 controls other than tab and CR, and DEL: never shown.
const CONTROL = /[\x00-\x08\x0a-\x0c\x0e-\x1a\x1c-\x1f\x7f]/g;
const HAS_CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/;
const ERASE = /\x1b\[[0-9;]*K/;

/** The colour an SGR 38/48 parameter list names at `i`: [colour, params consumed]. */
function extendedColour(params, i) {
  const sub = params[i].split(':');
  if (sub.length > 1) {
    // Colon form: 38:5:n, 38:2:r:g:b or 38:2:space:r:g:b.
    if (sub[1] === '5') return [clampIndex(sub[2]), 1];
    if (sub[1] === '2') return [rgb(...sub.slice(-3)), 1];
    return [null, 1];
  }
  if (params[i + 1] === '5') return [clampIndex(params[i + 2]), 3];
  if (params[i + 1] === '2') return [rgb(params[i + 2], params[i + 3], params[i + 4]), 5];
  return [null, 1];
}

function clampIndex(v) {
  const n = Number.parseInt(v, 10);
  return Number.isInteger(n) && n >= 0 && n <= 255 ? n : null;
}

function rgb(r, g, b) {
  const c = [r, g, b].map((v) => Math.min(255, Math.max(0, Number.parseInt(v, 10) || 0)));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

/** `style` after the SGR parameter string `raw` (e.g. `"1;31"`, `"38;5;208"`). */
export function applySgr(style, raw) {
  const params = raw === '' ? ['0'] : raw.split(';');
  const s = { ...style };
  for (let i = 0; i < params.length; ) {
    const code = Number.parseInt(params[i].split(':')[0], 10) || 0;
    if (code === 38 || code === 48) {
      const [colour, used] = extendedColour(params, i);
      if (colour !== null) s[code === 38 ? 'fg' : 'bg'] = colour;
      i += used;
      continue;
    }
    i += 1;
    if (code === 0) Object.assign(s, PLAIN);
    else if (code === 1) s.bold = true;
    else if (code === 2) s.dim = true;
    else if (code === 3) s.italic = true;
    else if (code === 4) s.underline = true;
    else if (code === 7) s.inverse = true;
    else if (code === 9) s.strike = true;
    else if (code === 21 || code === 22) { s.bold = false; s.dim = false; }
    else if (code === 23) s.italic = false;
    else if (code === 24) s.underline = false;
    else if (code === 27) s.inverse = false;
    else if (code === 29) s.strike = false;
    else if (code >= 30 && code <= 37) s.fg = code - 30;
    else if (code === 39) s.fg = null;
    else if (code >= 40 && code <= 47) s.bg = code - 40;
    else if (code === 49) s.bg = null;
    else if (code >= 90 && code <= 97) s.fg = code - 90 + 8;
    else if (code >= 100 && code <= 107) s.bg = code - 100 + 8;
  }
  // Back to no style at all: the shared PLAIN, which is drawn as a bare text node.
  if (Object.keys(PLAIN).every((k) => s[k] === PLAIN[k])) return PLAIN;
  return Object.freeze(s);
}

/**
 * A log line as styled spans `[{text, style}]`, the way a terminal would leave it: SGR sets
 * the style, a bare CR moves back to column 0 so later text overwrites (`10%\r20%` shows
 * `20%`), `ESC[K` erases to the end. Other escapes and control bytes are dropped. The text
 * only ever becomes DOM text, never markup.
 */
export function parseAnsi(line) {
  let style = PLAIN;
  let spans = [];
  let cells = null; // per column [char, style], once a CR makes overwriting possible
  let col = 0;
  const write = (text) => {
    text = text.replace(CONTROL, '');
    if (text === '') return;
    if (cells === null) {
      const last = spans[spans.length - 1];
      if (last && last.style === style) last.text += text;
      else spans.push({ text, style });
      return;
    }
    for (const ch of text) cells[col++] = [ch, style];
  };
  const toCells = () => {
    if (cells !== null) return;
    cells = [];
    for (const s of spans) for (const ch of s.text) cells.push([ch, s.style]);
    col = cells.length;
    spans = [];
  };
  let at = 0;
  for (const m of line.matchAll(ESCAPE)) {
    writeWithCr(line.slice(at, m.index));
    at = m.index + m[0].length;
    if (m[2] === 'm') style = applySgr(style, m[1]);
    else if (m[2] === 'K') {
      toCells();
      const mode = m[1] || '0';
      if (mode === '0') cells.length = Math.min(cells.length, col);
      else if (mode === '1') for (let i = 0; i < col && i < cells.length; i++) cells[i] = [' ', style];
      else if (mode === '2') cells = [];
    }
  }
  writeWithCr(line.slice(at));
  if (cells === null) return spans;
  const out = [];
  for (const cell of cells) {
    const [ch, st] = cell ?? [' ', PLAIN];
    const last = out[out.length - 1];
    if (last && last.style === st) last.text += ch;
    else out.push({ text: ch, style: st });
  }
  return out;

  function writeWithCr(text) {
    const parts = text.split('\r');
    write(parts[0]);
    for (let i = 1; i < parts.length; i++) {
      toCells();
      col = 0;
      write(parts[i]);
    }
  }
}

/** What a line shows, without styles: what search looks through. */
export function plainText(line) {
  if (!HAS_CONTROL.test(line)) return line;
  // Without a CR or an erase, dropping the escapes is enough (and much faster).
  if (line.indexOf('\r') < 0 && !ERASE.test(line)) return line.replace(ESCAPE, '').replace(CONTROL, '');
  return parseAnsi(line).map((s) => s.text).join('');
}

/** The 256-colour palette entry `n` (16 and up; 0 to 15 follow the page's theme). */
export function paletteColour(n) {
  if (n >= 232) {
    const v = 8 + 10 * (n - 232);
    return `rgb(${v}, ${v}, ${v})`;
  }
  const levels = [0, 95, 135, 175, 215, 255];
  const i = n - 16;
  return `rgb(${levels[Math.floor(i / 36)]}, ${levels[Math.floor(i / 6) % 6]}, ${levels[i % 6]})`;
}

// ---------------------------------------------------------------------------------------
// Sections: GitHub Actions' `::group::` / `::endgroup::` and Buildkite's `---` / `+++` / `~~~`.

/**
 * What a line does to sections: `{start: name, open}` opens a group (closing the one before),
 * `{end: true}` ends it, `{reopen: true}` (Buildkite's `^^^ +++`) expands the one before;
 * `null` for an ordinary line. Checked on the raw line, before styles.
 */
export function sectionOf(line) {
  const c = line.charCodeAt(0);
  if (c !== 58 && c !== 35 && c !== 45 && c !== 43 && c !== 126 && c !== 94) return null; // : # - + ~ ^
  let m = /^(?:::group::|##\[group\])(.*)$/.exec(line);
  if (m) return { start: m[1].trim() || 'group', open: false };
  if (/^(?:::endgroup::|##\[endgroup\])\s*$/.test(line)) return { end: true };
  m = /^(---|\+\+\+|~~~) (.*)$/.exec(line);
  if (m) return { start: m[2].trim() || 'section', open: m[1] === '+++' };
  if (/^\^\^\^ \+\+\+\s*$/.test(line)) return { reopen: true };
  return null;
}

// ---------------------------------------------------------------------------------------
// The log model: every record held once, plus the list of rows not hidden by a fold.

/** The marker line the gateway writes when a job reaches its size limit. */
const TRUNCATED = 'tailgate: log truncated';

/** Most search hits kept: the count says "N+" past it, and memory stays bounded. */
export const MAX_HITS = 100000;

/**
 * One job's log. `entries` holds lines, group headers and markers in arrival order; `rows`
 * the indices of the entries on screen (those not folded away). No DOM.
 */
export class LogModel {
  constructor() {
    this.reset();
  }

  reset() {
    /**
     * `{kind: 'line'|'group'|'marker', n, seq, stream, ts, text, group, head, cls}`: `n` the
     * line number (0 for markers), `group` the group it sits in, `head` the group it heads.
     */
    this.entries = [];
    /** Entry indices shown, in order; rebuilt when a group folds. */
    this.rows = [];
    /** `{entry, name, open, size}`; `size` counts the lines inside. */
    this.groups = [];
    /** Log lines seen, numbered like the raw log's lines. */
    this.lines = 0;
    /** The entry of each line number (-1 for section ends, which show no row). */
    this.lineEntry = [];
    this.current = -1; // the open group, or -1
    this.firstTs = null;
    this.query = '';
    /** The next entry the running search reads (Infinity: no search). */
    this.searchAt = Infinity;
    /** Hits: parallel arrays of entry index and start offset in its plain text. */
    this.hitEntry = [];
    this.hitStart = [];
    this.hitTotal = 0;
  }

  /** Adds a log record `{seq, ts, stream, line}`. */
  addLine(rec) {
    this.lines += 1;
    const n = this.lines;
    const ts = Date.parse(rec.ts);
    if (this.firstTs === null && Number.isFinite(ts)) this.firstTs = ts;
    const section = rec.stream === 'system' ? null : sectionOf(rec.line);
    this.lineEntry.push(section && !section.start ? -1 : this.entries.length);
    if (section && section.end) {
      this.current = -1;
      return;
    }
    if (section && section.reopen) {
      if (this.groups.length > 0) this.setOpen(this.groups.length - 1, true);
      return;
    }
    const entry = {
      kind: section ? 'group' : 'line', n, seq: rec.seq, stream: rec.stream, ts,
      text: section ? section.start : rec.line, group: -1, head: -1, cls: '',
    };
    if (rec.stream === 'system' && rec.line.startsWith(TRUNCATED)) entry.cls = 'truncated';
    if (section) {
      entry.head = this.groups.length;
      this.current = this.groups.length;
      this.groups.push({ entry: this.entries.length, name: section.start, open: section.open, size: 0 });
    } else if (this.current >= 0) {
      entry.group = this.current;
      this.groups[this.current].size += 1;
    }
    this.push(entry);
  }

  /** Counts `n` lines that never arrived (a gap), so later line numbers stay true. */
  skipLines(n) {
    for (let k = 0; k < n; k++) this.lineEntry.push(-1);
    this.lines += n;
  }

  /** Adds a marker row (gap, reset, status, custom record): no line number, no group. */
  addMarker(cls, text, seq = 0, ts = NaN) {
    this.current = -1;
    this.push({ kind: 'marker', n: 0, seq, stream: '', ts, text, group: -1, head: -1, cls });
  }

  push(entry) {
    const i = this.entries.length;
    this.entries.push(entry);
    if (entry.group < 0 || this.groups[entry.group].open) this.rows.push(i);
    if (this.searchAt === i) {
      // The search has read everything before: it reads new lines as they come.
      if (entry.kind !== 'marker') this.searchEntry(i);
      this.searchAt = i + 1;
    }
  }

  /** Folds or unfolds group `g`; rebuilds the row list. */
  setOpen(g, open) {
    if (this.groups[g].open === open) return;
    this.groups[g].open = open;
    this.rows = [];
    const { entries, groups, rows } = this;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      if (e.group < 0 || groups[e.group].open) rows.push(i);
    }
  }

  /** The row showing entry `i` (unfolding its group), or -1. */
  rowOf(i) {
    const e = this.entries[i];
    if (e && e.group >= 0 && !this.groups[e.group].open) this.setOpen(e.group, true);
    return lowerBound(this.rows, i, this.rows.length);
  }

  /** The entry of line number `n`, or -1 (an `::endgroup::` line has none). */
  entryOfLine(n) {
    return this.lineEntry[n - 1] ?? -1;
  }

  /** Searches the whole log for `query` (case-insensitive) at once; returns the hit count. */
  search(query) {
    this.startSearch(query);
    this.searchSome(Infinity);
    return this.hitTotal;
  }

  /** Starts a search for `query`; `searchSome` scans the log, appends scan as they come. */
  startSearch(query) {
    this.query = query.toLowerCase();
    this.hitEntry = [];
    this.hitStart = [];
    this.hitTotal = 0;
    this.searchAt = this.query === '' ? Infinity : 0;
  }

  /** Scans up to `limit` more entries; true when the whole log has been searched. */
  searchSome(limit) {
    const end = Math.min(this.entries.length, this.searchAt + limit);
    for (let i = this.searchAt; i < end; i++) {
      if (this.entries[i].kind !== 'marker') this.searchEntry(i);
    }
    this.searchAt = Math.max(this.searchAt, end);
    return this.searchAt >= this.entries.length;
  }

  searchEntry(i) {
    const starts = findAll(plainText(this.entries[i].text).toLowerCase(), this.query);
    this.hitTotal += starts.length;
    for (const s of starts) {
      if (this.hitEntry.length >= MAX_HITS) return;
      this.hitEntry.push(i);
      this.hitStart.push(s);
    }
  }
}

/** First index in sorted `a[0..len)` not below `x`, or -1 when `a` lacks `x`. */
function lowerBound(a, x, len) {
  let lo = 0;
  let hi = len;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo < len && a[lo] === x ? lo : -1;
}

/** Start offsets of non-overlapping `needle` in `hay` (both already lower case). */
export function findAll(hay, needle) {
  const out = [];
  if (needle === '') return out;
  for (let i = hay.indexOf(needle); i >= 0; i = hay.indexOf(needle, i + needle.length)) out.push(i);
  return out;
}

/** Splits spans at the hit ranges `[start, end, current]` so each hit gets its own span. */
export function markHits(spans, ranges) {
  if (ranges.length === 0) return spans;
  const out = [];
  let pos = 0;
  let r = 0;
  for (const span of spans) {
    let text = span.text;
    let at = pos;
    while (text !== '') {
      while (r < ranges.length && ranges[r][1] <= at) r++;
      const range = ranges[r];
      let take;
      let hit = null;
      if (range && range[0] <= at) {
        take = Math.min(text.length, range[1] - at);
        hit = range[2] ? 'current' : 'hit';
      } else {
        take = range ? Math.min(text.length, range[0] - at) : text.length;
      }
      out.push({ text: text.slice(0, take), style: span.style, hit });
      text = text.slice(take);
      at += take;
    }
    pos += span.text.length;
  }
  return out;
}

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

// ---------------------------------------------------------------------------------------
// The page: state, the render loop, the stream, the controls.

/** Everything the page knows; exported so the browser tests can look inside. */
export const view = {
  model: new LogModel(),
  token: null,
  status: null,
  exitCode: null,
  finished: false,
  lastSeq: 0,
  /** The event id of the last record shown (`<seq>-<life>`), sent back on a reconnect. */
  lastId: '',
  /** The worker that holds the EventSource. */
  worker: null,
  /** Streams the page opened (the browser's own reconnects not counted). */
  connects: 0,
  /** The wait before the page's next reconnect after a refused stream, ms. */
  backoff: 0,
  conn: 'connecting',
  following: true,
  atBottom: true,
  showTimes: false,
  selection: null, // [first, last] line numbers
  hit: -1, // the current hit
  searches: 0, // bumped per search, so an older one stops
  searching: false,
  pendingHit: 0, // next (1) or previous (-1) asked before the search found anything
  dirty: true,
  /** Bumped when every row must be redrawn (fold, search, selection, timestamps). */
  epoch: 0,
  scrollTo: -1, // a row to bring into view on the next frame
  keep: null, // {entry, offset}: an entry to keep at `offset` px from the top, after a fold
};

const $ = (id) => document.getElementById(id);
let rowHeight = 20;
let framePending = false;
let lastScrollTop = 0;

/** Asks for one frame; everything that changes the DOM waits for it. */
function schedule() {
  view.dirty = true;
  if (!framePending) {
    framePending = true;
    requestAnimationFrame(frame);
  }
}

/** The render loop's one step: spacer height, follow, the visible rows, the header. */
function frame() {
  framePending = false;
  if (!view.dirty) return;
  view.dirty = false;
  const log = $('log');
  const { rows } = view.model;
  $('spacer').style.height = `${rows.length * rowHeight}px`;
  if (view.keep) {
    // A fold changed the rows above or below: keep its header where the reader saw it.
    log.scrollTop = Math.max(0, view.model.rowOf(view.keep.entry) * rowHeight - view.keep.offset);
    view.keep = null;
  } else if (view.scrollTo >= 0) {
    const top = view.scrollTo * rowHeight - log.clientHeight / 3;
    log.scrollTop = Math.max(0, top);
    view.scrollTo = -1;
  } else if (view.following) {
    log.scrollTop = log.scrollHeight;
  }
  lastScrollTop = log.scrollTop;
  view.atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - rowHeight;
  const first = Math.max(0, Math.floor(log.scrollTop / rowHeight) - 5);
  const count = Math.max(0, Math.min(rows.length - first, Math.ceil(log.clientHeight / rowHeight) + 10));
  const box = $('rows');
  box.style.transform = `translateY(${first * rowHeight}px)`;
  while (box.children.length > count) box.lastChild.remove();
  while (box.children.length < count) box.appendChild(document.createElement('div'));
  for (let k = 0; k < count; k++) drawRow(box.children[k], rows[first + k]);
  drawHeader();
}

/** Draws entry `i` into `el`, unless `el` already shows it at this epoch. */
function drawRow(el, i) {
  const { model } = view;
  const e = model.entries[i];
  const g = e.head >= 0 ? model.groups[e.head] : null;
  const key = `${i}:${view.epoch}:${g ? `${g.open}${g.size}` : ''}`;
  if (el.dataset.key === key) return;
  el.dataset.key = key;
  el.textContent = '';
  el.className = `row ${e.kind} ${e.stream} ${e.cls}`;
  if (e.kind !== 'marker' && view.selection && e.n >= view.selection[0] && e.n <= view.selection[1]) {
    el.classList.add('selected');
  }
  const ln = document.createElement('a');
  ln.className = 'ln';
  if (e.n > 0) {
    ln.textContent = String(e.n);
    ln.href = `#L${e.n}`;
    ln.dataset.n = String(e.n);
  }
  el.appendChild(ln);
  if (view.showTimes) {
    const t = document.createElement('span');
    t.className = 'time';
    t.textContent = formatTime(e.ts);
    const d = document.createElement('span');
    d.className = 'elapsed';
    d.textContent = formatElapsed(e.ts - view.model.firstTs);
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
  appendSpans(text, e.kind === 'marker' ? [{ text: e.text, style: PLAIN }] : spansOf(i, e));
  into.appendChild(text);
  if (g) {
    const size = document.createElement('span');
    size.className = 'size';
    size.textContent = ` ${g.size} line${g.size === 1 ? '' : 's'}`;
    into.appendChild(size);
  }
}

/** The styled spans of entry `i`, split at search hits. */
function spansOf(i, e) {
  const spans = parseAnsi(e.text);
  const { model } = view;
  if (model.query === '') return spans;
  const plain = spans.map((s) => s.text).join('').toLowerCase();
  const cur = view.hit >= 0 && model.hitEntry[view.hit] === i ? model.hitStart[view.hit] : -1;
  const ranges = findAll(plain, model.query).map((s) => [s, s + model.query.length, s === cur]);
  return markHits(spans, ranges);
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
  const status = view.status ?? (view.model.lines > 0 ? 'running' : 'waiting');
  const label = view.exitCode === null ? status : `${status} \u00b7 exit ${view.exitCode}`;
  if (badge.textContent !== label) badge.textContent = label;
  badge.dataset.status = status;
  document.title = `${label} \u00b7 ${jobName()} \u00b7 Tailgate`;
  document.body.dataset.conn = view.conn;
  const conn = $('conn');
  const notice = {
    reconnecting: 'connection lost, reconnecting\u2026',
    denied: 'the token was refused; open the page with a fresh #token=',
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
  $('jump').hidden = view.following || view.atBottom;
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
        rec.id = ev.lastEventId; // `<seq>-<life>`: a resume in another life is reset
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
  if (rec.event === 'gap') {
    model.addMarker('gap', `records ${rec.from}\u2013${rec.to} are no longer held by the gateway`);
    model.skipLines(rec.to - rec.from + 1);
    view.lastSeq = Math.max(view.lastSeq, rec.to);
    view.lastId = rec.id;
    return;
  }
  if (rec.event === 'reset') {
    // The gateway no longer knows our position (it lost the job's earlier life): start over.
    model.reset();
    view.lastSeq = 0;
    view.lastId = '';
    runSearch();
    model.addMarker('reset', 'the gateway restarted this log from its beginning');
    return;
  }
  if (rec.seq <= view.lastSeq) return; // already shown: a resume never doubles a line
  view.lastSeq = rec.seq;
  view.lastId = rec.id;
  if (rec.event === 'log') {
    model.addLine(rec);
    if (view.pendingLines && model.lines >= view.pendingLines[0]) selectLines(view.pendingLines);
  } else if (rec.event === 'custom') {
    model.addMarker('custom', `${rec.kind}: ${JSON.stringify(rec.data)}`, rec.seq, Date.parse(rec.ts));
  } else if (rec.event === 'status') {
    view.status = rec.status;
    view.exitCode = rec.exit_code ?? null;
    if (rec.final || TERMINAL.has(rec.status)) {
      const code = view.exitCode === null ? '' : ` (exit ${view.exitCode})`;
      model.addMarker(`status ${rec.status}`, `job ${rec.status}${code}`, rec.seq, Date.parse(rec.ts));
      finish();
    }
  }
}

/** One of the job's routes named in the page's `data-*` attributes, as an absolute URL. */
function link(attr) {
  const url = new URL(document.body.dataset[attr], location.href);
  url.hash = '';
  return url;
}

/** Opens the stream after the last seq shown (exported for the tests' 204 case). */
export function connect() {
  const url = link('stream');
  url.searchParams.set('token', view.token);
  if (view.lastSeq > 0) url.searchParams.set('last_event_id', view.lastId || String(view.lastSeq));
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
    reply = { status: r.status, body: r.ok ? await r.json() : null };
  } catch {
    reply = null; // the gateway is away: try again later
  }
  if (reply && (reply.status === 401 || reply.status === 403)) {
    view.conn = 'denied';
    schedule();
    return;
  }
  if (reply && reply.body && TERMINAL.has(reply.body.status) && reply.body.last_seq <= view.lastSeq) {
    view.status = reply.body.status;
    view.exitCode = reply.body.exit_code ?? null;
    finish();
    schedule();
    return;
  }
  view.backoff = Math.min(30000, (view.backoff || 1000) * 2);
  setTimeout(connect, view.backoff);
}

// ---------------------------------------------------------------------------------------
// Controls: follow, folds, line links, search, timestamps.

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
  view.scrollTo = model.rowOf(model.hitEntry[view.hit]);
  view.epoch += 1;
  schedule();
}

/** Entries one search step reads: small enough to keep each task short. */
const SEARCH_STEP = 20000;

function runSearch() {
  view.model.startSearch($('q').value);
  view.hit = -1;
  view.epoch += 1;
  const generation = ++view.searches;
  const step = () => {
    if (generation !== view.searches) return; // a newer search replaced this one
    view.searching = !view.model.searchSome(SEARCH_STEP);
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
      const offset = view.model.rowOf(entry) * rowHeight - $('log').scrollTop;
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
  const times = $('times');
  times.checked = localStorage.getItem('tailgate.times') === '1';
  view.showTimes = times.checked;
  document.body.classList.toggle('times', view.showTimes);
  times.addEventListener('change', () => {
    view.showTimes = times.checked;
    localStorage.setItem('tailgate.times', times.checked ? '1' : '0');
    document.body.classList.toggle('times', view.showTimes);
    view.epoch += 1;
    schedule();
  });
  window.addEventListener('hashchange', onHash);
  window.addEventListener('resize', schedule);
}

function start() {
  rowHeight = Number.parseFloat(getComputedStyle(document.documentElement).getPropertyValue('--row-h')) || 20;
  $('job').textContent = jobName();
  wire();
  // The token leaves the address bar (so a shared or screenshotted URL carries none) and
  // waits in this tab's session storage for a reload.
  const key = `tailgate.token:${location.pathname}`;
  const fragment = parseFragment(location.hash);
  view.token = fragment.token ?? sessionStorage.getItem(key);
  const keep = fragment.lines ? `#L${fragment.lines[0]}${fragment.lines[1] > fragment.lines[0] ? `-L${fragment.lines[1]}` : ''}` : '';
  history.replaceState(null, '', `${location.pathname}${location.search}${keep}`);
  if (!view.token) {
    view.conn = 'missing';
    schedule();
    return;
  }
  sessionStorage.setItem(key, view.token);
  const raw = link('raw');
  raw.searchParams.set('token', view.token);
  $('raw').href = raw.href;
  $('raw').setAttribute('download', `${jobName()}.log`);
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
