// The live log page's model: sections (GitHub Actions' groups, Buildkite's `---`/`+++`/`~~~`
// with `:emoji:`), every record held once, the rows on screen (folds and wrapped lines), group
// durations, where a failure sits, and search. Pure: no DOM.

import { isErrorLine, plainText } from './ansi.js';

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

/** Buildkite's common `:shortcode:` emoji (its own logos have no Unicode form). */
export const EMOJI = {
  '+1': '\u{1f44d}', apple: '\u{1f34e}', arrow_down: '\u2b07\ufe0f', arrow_up: '\u2b06\ufe0f',
  bar_chart: '\u{1f4ca}', bell: '\u{1f514}', book: '\u{1f4d6}', books: '\u{1f4da}',
  boom: '\u{1f4a5}', broom: '\u{1f9f9}', bug: '\u{1f41b}', building_construction: '\u{1f3d7}\ufe0f',
  bulb: '\u{1f4a1}', chart_with_upwards_trend: '\u{1f4c8}', clipboard: '\u{1f4cb}',
  closed_lock_with_key: '\u{1f510}', cloud: '\u2601\ufe0f', computer: '\u{1f4bb}',
  construction: '\u{1f6a7}', crab: '\u{1f980}', docker: '\u{1f433}', earth_americas: '\u{1f30e}',
  eyes: '\u{1f440}', fire: '\u{1f525}', floppy_disk: '\u{1f4be}', gear: '\u2699\ufe0f',
  globe_with_meridians: '\u{1f310}', hammer: '\u{1f528}', hammer_and_wrench: '\u{1f6e0}\ufe0f',
  heavy_check_mark: '\u2714\ufe0f', hourglass: '\u231b', key: '\u{1f511}', label: '\u{1f3f7}\ufe0f',
  link: '\u{1f517}', linux: '\u{1f427}', lipstick: '\u{1f484}', lock: '\u{1f512}',
  mag: '\u{1f50d}', memo: '\u{1f4dd}', microscope: '\u{1f52c}', package: '\u{1f4e6}',
  pencil2: '\u270f\ufe0f', penguin: '\u{1f427}', pushpin: '\u{1f4cc}', python: '\u{1f40d}',
  recycle: '\u267b\ufe0f', robot_face: '\u{1f916}', rocket: '\u{1f680}', rotating_light: '\u{1f6a8}',
  rust: '\u{1f980}', scroll: '\u{1f4dc}', seedling: '\u{1f331}', shield: '\u{1f6e1}\ufe0f',
  ship: '\u{1f6a2}', snake: '\u{1f40d}', sparkles: '\u2728', stopwatch: '\u23f1\ufe0f',
  tada: '\u{1f389}', test_tube: '\u{1f9ea}', truck: '\u{1f69a}', warning: '\u26a0\ufe0f',
  whale: '\u{1f433}', white_check_mark: '\u2705', wrench: '\u{1f527}', x: '\u274c',
  zap: '\u26a1',
};

/** `text` with known `:shortcode:`s as emoji; unknown ones stay as written. */
export function emojify(text) {
  if (text.indexOf(':') < 0) return text;
  return text.replace(/:([a-z0-9_+-]+):/g, (all, name) => (Object.hasOwn(EMOJI, name) ? EMOJI[name] : all));
}

/** A group's duration: `0.4s`, `12.3s`, `2m 05s`, `1h 02m`. */
export function formatDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '';
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  const pad = (n) => String(Math.floor(n)).padStart(2, '0');
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  return `${Math.floor(s / 3600)}h ${pad((s % 3600) / 60)}m`;
}

// ---------------------------------------------------------------------------------------
// The log model: every record held once, plus the list of rows not hidden by a fold.

/** The marker line the gateway writes when a job reaches its size limit. */
const TRUNCATED = 'tailgate: log truncated';

/** Most search hits kept: the count says "N+" past it, and memory stays bounded. */
export const MAX_HITS = 100000;
/** Lines read after the failing group's start when looking for the first error. */
const ERROR_SCAN = 100000;

/**
 * One job's log. `entries` holds lines, group headers and markers in arrival order; `rows`
 * the entry of each row on screen (those not folded away; a wrapped line once per row it
 * takes, with `segs` saying which part). No DOM.
 */
export class LogModel {
  constructor() {
    /** Columns per row when long lines wrap; 0 when they do not. */
    this.cols = 0;
    this.reset();
  }

  reset() {
    /**
     * `{kind: 'line'|'group'|'marker', n, seq, stream, ts, text, group, head, cls, len}`: `n`
     * the line number (0 for markers), `group` the group it sits in, `head` the group it
     * heads, `len` the shown length once measured (-1 before).
     */
    this.entries = [];
    /** Entry index of each row shown, in order; rebuilt when a group folds or wrap changes. */
    this.rows = [];
    /** With wrap on: which part (0, 1, ...) of its line each row shows. */
    this.segs = [];
    /** `{entry, name, open, size, start, end}`; `size` counts the lines inside, `start`/`end` ms. */
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
      this.closeGroup(ts);
      return;
    }
    if (section && section.reopen) {
      if (this.groups.length > 0) this.setOpen(this.groups.length - 1, true);
      return;
    }
    const name = section ? emojify(section.start) : '';
    const entry = {
      kind: section ? 'group' : 'line', n, seq: rec.seq, stream: rec.stream, ts,
      text: section ? name : rec.line, group: -1, head: -1, cls: '', len: -1,
    };
    if (rec.stream === 'system' && rec.line.startsWith(TRUNCATED)) entry.cls = 'truncated';
    if (section) {
      this.closeGroup(ts);
      entry.head = this.groups.length;
      this.current = this.groups.length;
      this.groups.push({ entry: this.entries.length, name, open: section.open, size: 0, start: ts, end: ts });
    } else if (this.current >= 0) {
      const g = this.groups[this.current];
      entry.group = this.current;
      g.size += 1;
      if (Number.isFinite(ts)) g.end = ts;
    }
    this.push(entry);
  }

  /** Ends the open group at `ts` (its duration runs to there). */
  closeGroup(ts) {
    if (this.current >= 0 && Number.isFinite(ts)) this.groups[this.current].end = ts;
    this.current = -1;
  }

  /** Counts `n` lines that never arrived (a gap), so later line numbers stay true. */
  skipLines(n) {
    for (let k = 0; k < n; k++) this.lineEntry.push(-1);
    this.lines += n;
  }

  /** Adds a marker row (gap, reset, status, custom record): no line number, no group. */
  addMarker(cls, text, seq = 0, ts = NaN) {
    this.closeGroup(ts);
    this.push({ kind: 'marker', n: 0, seq, stream: '', ts, text, group: -1, head: -1, cls, len: -1 });
  }

  push(entry) {
    const i = this.entries.length;
    this.entries.push(entry);
    if (entry.group < 0 || this.groups[entry.group].open) this.pushRows(i, entry);
    if (this.searchAt === i) {
      // The search has read everything before: it reads new lines as they come.
      if (entry.kind !== 'marker') this.searchEntry(i);
      this.searchAt = i + 1;
    }
  }

  /** The rows of entry `i`: one, or with wrap on, one per `cols` columns of a line. */
  pushRows(i, e) {
    if (this.cols === 0) {
      this.rows.push(i);
      return;
    }
    const parts = e.kind === 'line' ? Math.max(1, Math.ceil(lengthOf(e) / this.cols)) : 1;
    for (let s = 0; s < parts; s++) {
      this.rows.push(i);
      this.segs.push(s);
    }
  }

  /** Which part of its line row `r` shows (0 unless wrapped). */
  segOf(r) {
    return this.cols === 0 ? 0 : this.segs[r];
  }

  /** Rebuilds the rows after a fold or a change of wrap. */
  rebuild() {
    this.rows = [];
    this.segs = [];
    const { entries, groups } = this;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      if (e.group < 0 || groups[e.group].open) this.pushRows(i, e);
    }
  }

  /** Folds or unfolds group `g`. */
  setOpen(g, open) {
    if (this.groups[g].open === open) return;
    this.groups[g].open = open;
    this.rebuild();
  }

  /** Folds or unfolds every group at once. */
  setAllOpen(open) {
    for (const g of this.groups) g.open = open;
    this.rebuild();
  }

  /** Wraps lines at `cols` columns (0: no wrap). */
  setWrap(cols) {
    if (this.cols === cols) return;
    this.cols = cols;
    this.rebuild();
  }

  /** The first row showing entry `i` (unfolding its group), or -1. */
  rowOf(i) {
    const e = this.entries[i];
    if (e && e.group >= 0 && !this.groups[e.group].open) this.setOpen(e.group, true);
    return lowerBound(this.rows, i, this.rows.length);
  }

  /** The entry of line number `n`, or -1 (an `::endgroup::` line has none). */
  entryOfLine(n) {
    return this.lineEntry[n - 1] ?? -1;
  }

  /**
   * Where a failure shows, asked as the failed status arrives: the group open then (or the
   * last group), and the first error line from that group on (-1: none). `{group: -1}`
   * when the log has no groups.
   */
  failure() {
    const group = this.current >= 0 ? this.current : this.groups.length - 1;
    if (group < 0) return { group: -1, entry: -1 };
    const from = this.groups[group].entry;
    const end = Math.min(this.entries.length, from + ERROR_SCAN);
    for (let i = from + 1; i < end; i++) {
      const e = this.entries[i];
      if (e.kind === 'line' && isErrorLine(e.text)) return { group, entry: i };
    }
    return { group, entry: -1 };
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

  /**
   * Scans up to `limit` more entries, stopping early after `budget` characters of text (so a
   * slice of very long lines stays a short task); true when the whole log has been searched.
   */
  searchSome(limit, budget = Infinity) {
    const end = Math.min(this.entries.length, this.searchAt + limit);
    let read = 0;
    let i = this.searchAt;
    while (i < end && read < budget) {
      const e = this.entries[i];
      if (e.kind !== 'marker') this.searchEntry(i);
      read += e.text.length;
      i += 1;
    }
    this.searchAt = Math.max(this.searchAt, i);
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

/** The shown length of an entry's text, measured once. */
export function lengthOf(e) {
  if (e.len < 0) e.len = plainText(e.text).length;
  return e.len;
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
