'use strict';
// An independent WebSocket client to cross-check the benchmark's load generator: the
// simplest thing a person would write with `ws` (one process, JSON.parse on every
// message, latencies kept in an array and sorted at the end). It shares no code with
// loadgen/loadgen.js, and no clock helper: it reads CLOCK_MONOTONIC through
// process.hrtime.bigint(), the clock the servers stamp events with.
//
//   node wsclient.js <url> <clients> <run> <expected per client> <max seconds>
//
// Prints `OPEN <n>` once every client is connected, then, once every client has its
// expected events of run <run> (or nothing arrived for 1 s, or max seconds passed),
// `RESULT {"count":..,"p50Ms":..,"p99Ms":..,"maxMs":..,"cpuPct":..}` and exits.
const WebSocket = require('ws');

const [url, nArg, run, expectedArg, maxArg] = process.argv.slice(2);
const n = Number(nArg);
const expected = Number(expectedArg) * n;
const prefix = `R${run}:`;
const latencies = [];
let last = 0;
let startCpu = null;
let startWall = 0;

const now = () => Number(process.hrtime.bigint()) / 1e9;

function finish() {
  latencies.sort((a, b) => a - b);
  const q = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : null);
  const cpu = process.cpuUsage(startCpu || undefined);
  const wall = now() - (startWall || now());
  const out = {
    count: latencies.length,
    expected,
    p50Ms: q(0.5),
    p99Ms: q(0.99),
    maxMs: latencies.length ? latencies[latencies.length - 1] : null,
    cpuPct: wall > 0 ? (100 * (cpu.user + cpu.system)) / 1e6 / wall : 0,
  };
  process.stdout.write('RESULT ' + JSON.stringify(out) + '\n');
  process.exit(0);
}

let open = 0;
for (let i = 0; i < n; i++) {
  const ws = new WebSocket(url);
  ws.on('open', () => {
    open += 1;
    if (open === n) process.stdout.write(`OPEN ${open}\n`);
  });
  ws.on('message', (data) => {
    const t = now();
    const event = JSON.parse(data);
    if (typeof event.chunk !== 'string' || !event.chunk.startsWith(prefix)) return;
    if (startCpu === null) {
      startCpu = process.cpuUsage();
      startWall = t;
    }
    const scheduled = Number(event.chunk.split(':')[1]);
    latencies.push((t - scheduled) * 1000);
    last = t;
    if (latencies.length >= expected) finish();
  });
  ws.on('error', (e) => process.stderr.write(String(e) + '\n'));
}
const deadline = now() + Number(maxArg);
setInterval(() => {
  const t = now();
  if (t > deadline || (last && t - last > 1)) finish();
}, 100);
