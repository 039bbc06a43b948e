// Reads one SSE stream with an unmodified published client and prints each event it
// fires as one JSON line {"type","id","data"}, stopping after a final status event.
// Usage: node clients.mjs <eventsource|fetch-event-source> <node_modules dir> <url>
import { createRequire } from "node:module";
import { join } from "node:path";

const [client, modules, url] = process.argv.slice(2);
const require = createRequire(join(modules, "package.json"));
const print = (type, id, data) =>
  process.stdout.write(JSON.stringify({ type, id: id ?? null, data }) + "\n");
const isFinal = (type, data) => {
  if (type !== "status") return false;
  try {
    return JSON.parse(data).final === true;
  } catch {
    return false;
  }
};

if (client === "eventsource") {
  const { EventSource } = require("eventsource");
  const es = new EventSource(url);
  const on = (type) => (e) => {
    print(type, e.lastEventId, e.data);
    if (isFinal(type, e.data)) {
      es.close();
      process.exit(0);
    }
  };
  for (const type of ["message", "log", "status", "custom", "gap", "reset"]) {
    es.addEventListener(type, on(type));
  }
  es.onerror = (e) => {
    if (es.readyState === EventSource.CLOSED) {
      process.stderr.write(`eventsource closed: ${e.message ?? e}\n`);
      process.exit(3);
    }
  };
} else if (client === "fetch-event-source") {
  // A browser library: give it the two globals it touches outside the fetch.
  globalThis.window = globalThis;
  globalThis.document = { addEventListener() {}, removeEventListener() {}, hidden: false };
  const { fetchEventSource } = require("@microsoft/fetch-event-source");
  const ctrl = new AbortController();
  await fetchEventSource(url, {
    signal: ctrl.signal,
    openWhenHidden: true,
    onmessage(m) {
      print(m.event || "message", m.id, m.data);
      if (isFinal(m.event, m.data)) ctrl.abort();
    },
    onclose() {
      ctrl.abort();
    },
    onerror(err) {
      process.stderr.write(`fetch-event-source: ${err}\n`);
      throw err;
    },
  });
} else {
  process.stderr.write(`unknown client ${client}\n`);
  process.exit(2);
}
