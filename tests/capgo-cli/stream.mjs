// Drives the published @capgo/cli's own build-log streaming function against a logs_url,
// as `capgo build request` does after Capgo's /build/start answered logs_url/logs_token.
//
//   node stream.mjs <cli-package-dir> <logs_url> <logs_token>
//
// The CLI does not export the function, so this copies its bundle (dist/index.js) beside
// the original with the command-line entry cut off and the streaming function exported;
// the function is found by the `confirmed_received` frame it sends. Prints what the CLI
// prints, then `TAILGATE_RESULT=<status>`; exits 0 only for `succeeded`, as the CLI does.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [pkgDir, logsUrl, token] = process.argv.slice(2);
if (!pkgDir || !logsUrl || !token) {
  console.error('usage: node stream.mjs <cli-package-dir> <logs_url> <logs_token>');
  process.exit(64);
}

const bundlePath = join(pkgDir, 'dist', 'index.js');
let src = readFileSync(bundlePath, 'utf8');

const marker = src.indexOf('type:"confirmed_received"');
if (marker < 0) throw new Error('no confirmed_received in the CLI bundle');
const fnRe = /async function ([\w$]+)\(/g;
let name = null;
for (const m of src.slice(0, marker).matchAll(fnRe)) name = m[1];
if (!name) throw new Error('streaming function not found');

// The entry is the last statement running the commander program, `<program>.parseAsync()`
// (8.x: `<init>(process.argv);(async()=>{try{if(await <program>.parseAsync()...`;
// 7.x: `<program>.parseAsync().catch(...)`): cut from there.
const parse = src.lastIndexOf('.parseAsync(');
if (parse < 0) throw new Error('CLI entry point not found');
let cut = src.lastIndexOf(';', parse) + 1;
const before = src.lastIndexOf(';', cut - 2) + 1;
if (src.slice(before, cut).includes('process.argv')) cut = before;
src = src.slice(0, cut).replace(/^#!.*\n/, '') + `\nexport { ${name} as streamBuildLogs };\n`;

// Beside the original, so its relative imports and its require() resolve the same.
const harness = join(pkgDir, 'dist', `.tailgate-stream-harness-${process.pid}.mjs`);
writeFileSync(harness, src);
let streamBuildLogs;
try {
  ({ streamBuildLogs } = await import(pathToFileURL(harness).href));
} finally {
  rmSync(harness, { force: true });
}

// (silent, verbose, logs_url, logs_token, statusCheck, abortSignal, onFallback[, output])
// in 7.7x and 8.x alike.
const status = await streamBuildLogs(false, false, logsUrl, token, undefined, undefined, () => {
  console.log('TAILGATE_FALLBACK');
}, undefined);
console.log(`TAILGATE_RESULT=${status}`);
process.exit(status === 'succeeded' ? 0 : 1);
