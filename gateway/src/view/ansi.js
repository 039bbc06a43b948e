// ANSI for the live log page: SGR styles, carriage returns and erase-in-line, as a terminal
// shows them, and the span work the renderer needs to stay cheap on hostile lines (a window of
// columns, a cap on styled spans per row). Pure functions, no DOM.

/** The style of text with no SGR applied. Styles are immutable and interned (see `intern`). */
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

/** Distinct styles kept for sharing; past it (a truecolor rainbow) styles are not shared. */
const MAX_STYLES = 4096;
/** SGR parameter strings remembered per style: the common transitions. */
const MAX_TRANSITIONS = 64;

/** Equal styles as one object, so spans of one style merge and transitions can be cached. */
const interned = new Map([[styleKey(PLAIN), PLAIN]]);
/** Per style, the style each SGR parameter string leads to. */
const transitions = new WeakMap();

function styleKey(s) {
  return `${s.fg}|${s.bg}|${+s.bold}${+s.dim}${+s.italic}${+s.underline}${+s.inverse}${+s.strike}`;
}

function intern(s) {
  const key = styleKey(s);
  const found = interned.get(key);
  if (found) return found;
  const frozen = Object.freeze(s);
  if (interned.size < MAX_STYLES) interned.set(key, frozen);
  return frozen;
}

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
  let known = transitions.get(style);
  const hit = known?.get(raw);
  if (hit) return hit;
  const next = computeSgr(style, raw);
  if (!known) {
    known = new Map();
    transitions.set(style, known);
  }
  if (known.size < MAX_TRANSITIONS) known.set(raw, next);
  return next;
}

function computeSgr(style, raw) {
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
  return intern(s);
}

/**
 * A log line as styled spans `[{text, style}]`, the way a terminal would leave it: SGR sets
 * the style, a bare CR moves back to column 0 so later text overwrites (`10%\r20%` shows
 * `20%`), `ESC[K` erases to the end. Other escapes and control bytes are dropped. The text
 * only ever becomes DOM text, never markup. With `limit`, the spans may end soon after that
 * many columns (a long line drawn only in part need not be parsed whole).
 */
export function parseAnsi(line, limit = Infinity) {
  let style = PLAIN;
  let spans = [];
  let cells = null; // per column [char, style], once a CR makes overwriting possible
  let col = 0;
  // Only the first `limit` columns are asked for: stop there, unless a CR or an erase may
  // still change them.
  let shown = 0;
  const stopEarly = limit !== Infinity && line.indexOf('\r') < 0 && !ERASE.test(line);
  const write = (text) => {
    text = text.replace(CONTROL, '');
    if (text === '') return;
    shown += text.length;
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
    if (stopEarly && shown >= limit) return spans;
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

/** Whether a raw line reads as an error: an error prefix, a panic, or red text. */
export function isErrorLine(line) {
  if (RED.test(line)) return true;
  return ERROR_WORDS.test(plainText(line));
}
// SGR red foreground (31, 91, or 256-colour 1 and 9) anywhere in the parameters.
const RED = /\x1b\[(?:[0-9:]*;)*(?:31|91|38;5;0?[19])(?:;[0-9:]*)*m/;
const ERROR_WORDS = /^\s*(?:error|fatal)\b|^(?:::error\b|##\[error\])|\berror(?:\[[\w-]+\])?:|\bpanicked at\b/i;

/** The spans covering plain-text offsets `[a, b)` of `spans`. */
export function sliceSpans(spans, a, b) {
  const out = [];
  let pos = 0;
  for (const s of spans) {
    const end = pos + s.text.length;
    if (end > a && pos < b) {
      out.push({ ...s, text: s.text.slice(Math.max(0, a - pos), Math.min(s.text.length, b - pos)) });
    }
    pos = end;
    if (pos >= b) break;
  }
  return out;
}

/**
 * `spans` with at most `max` of them needing an element (a style or a hit); past that the
 * text stays but its styles go, merged into plain text. The current hit keeps its mark.
 * This bounds the DOM of a row whose colour changes at every character.
 */
export function capSpans(spans, max) {
  let used = 0;
  const out = [];
  for (const s of spans) {
    const styled = s.style !== PLAIN || s.hit;
    if (styled && (used < max || s.hit === 'current')) {
      used += 1;
      out.push(s);
      continue;
    }
    const plain = styled ? { text: s.text, style: PLAIN } : s;
    const last = out[out.length - 1];
    if (last && last.style === PLAIN && !last.hit) out[out.length - 1] = { text: last.text + plain.text, style: PLAIN };
    else out.push(plain);
  }
  return out;
}
