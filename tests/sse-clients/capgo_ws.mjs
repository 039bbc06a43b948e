// Follows a Capgo WebSocket stream with Node's `ws` (the client the published @capgo/cli
// bundles), as the CLI does: a heartbeat at once, then every frame until the server closes.
// Prints each text message as one JSON line {"message": <the frame>}, then a summary
// {"summary": {"extensions", "bytes_read", "messages"}}.
// Usage: node capgo_ws.mjs <node_modules dir> <url> <deflate|deflate-all|plain>
//   deflate      ws's defaults (what the CLI offers: client messages under 1 KiB sent plain)
//   deflate-all  the client compresses its own messages too (as browsers do)
//   plain        no extension offered
import { createRequire } from "node:module";
import { join } from "node:path";

const [modules, url, mode] = process.argv.slice(2);
const require = createRequire(join(modules, "package.json"));
const WebSocket = require("ws");

const perMessageDeflate =
  mode === "plain" ? false : mode === "deflate-all" ? { threshold: 0 } : true;
const ws = new WebSocket(url, { perMessageDeflate });
let messages = 0;
let socket = null;
ws.on("open", () => {
  socket = ws._socket;
  ws.send(JSON.stringify({ type: "heartbeat", lastId: 0 }));
});
ws.on("message", (data, isBinary) => {
  messages += 1;
  const text = isBinary ? Buffer.from(data).toString("base64") : data.toString("utf8");
  process.stdout.write(JSON.stringify({ message: JSON.parse(text) }) + "\n");
});
ws.on("error", (e) => {
  process.stderr.write(`ws error: ${e.message}\n`);
  process.exit(3);
});
ws.on("close", () => {
  const summary = {
    extensions: ws.extensions,
    bytes_read: socket ? socket.bytesRead : null,
    messages,
  };
  process.stdout.write(JSON.stringify({ summary }) + "\n");
  process.exit(0);
});
