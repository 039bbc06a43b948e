// The live log page's stream: an EventSource in a worker (this module, loaded again as the
// worker's script), what each record does to the model, the page's own reconnects after a
// refusal, and the raw log fetched with the token in a header.

import { $, forgetParsed, jobName, schedule, view } from './render.js';
import { runSearch, selectLines } from './page.js';

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
    es.onerror = (ev) => {
      if (source !== es) return;
      flush();
      if (typeof ev.data === 'string') {
        // The gateway's own `event: error` (it cannot read the job's records back), not a
        // connection error: say why; the stream then ends and the browser retries.
        scope.postMessage({ conn: 'failing', reason: storeReason(ev.data) });
        return;
      }
      // CONNECTING: the browser retries by itself. CLOSED: it gave up (a refusal).
      scope.postMessage({ conn: es.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting' });
    };
  };
}

/** The sentence of an `event: error`'s JSON (`{"error","message"}`), bounded. */
export function storeReason(data) {
  let body = null;
  try {
    body = JSON.parse(data);
  } catch {
    body = null;
  }
  const text = body && typeof body.message === 'string' && body.message !== ''
    ? body.message
    : body && typeof body.error === 'string' ? body.error : 'no reason given';
  return text.slice(0, 200);
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
    forgetParsed();
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
export function link(attr) {
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

export function startWorker() {
  view.worker = new Worker(import.meta.url, { type: 'module' });
  view.worker.onmessage = ({ data }) => {
    if (data.records) {
      for (const rec of data.records) receive(rec);
    } else if (!view.finished) {
      if (data.reason) view.storeError = data.reason;
      // The stream ending after an `error` event is no news: keep saying why until it is live.
      if (!(view.conn === 'failing' && data.conn === 'reconnecting')) view.conn = data.conn;
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
export async function downloadRaw(ev) {
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

if (typeof document === 'undefined' && typeof WorkerGlobalScope !== 'undefined' && self instanceof WorkerGlobalScope) {
  runStream(self);
}
