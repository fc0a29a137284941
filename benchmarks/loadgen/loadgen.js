'use strict';
// Load generator of the trio-obs benchmarks: many WebSocket clients (and an HTTP
// poster) in one Node process, driven line by line over stdin by benchmarks/run.py.
//
// Latency = receive time - the *scheduled* emit time the server wrote into the
// event's chunk ("R<run>:<seconds>:xxxx"). Both sides read CLOCK_MONOTONIC (Python's
// time.monotonic(), Node's process.hrtime), which every process on the host shares.
// The receive path does no JSON parsing (a client that only counts would not), so
// the generator's own cost per message stays far below the server's.
//
// Commands (one per line) -> replies (one line each):
//   CONNECT <url> <n>     exactly n open reading clients -> CONNECTED {"open":..,"failed":..}
//   RESET <run>           start counting events of a run -> OK
//   STALL <k>             k clients stop reading          -> OK <k>
//   DROP_STALLED          close the stalled clients       -> OK <n>
//   REPORT                counts, latency histogram, CPU  -> REPORT {...}
//   INGEST <url> <run> <batches> <size> <concurrency> <executionId> <maxSeconds>
//                         POST /api/events as fast as it answers -> INGESTED {...}
//   POSTMIX <url> <path> <contentType> <templateFile> <batches> <concurrency> <maxSeconds> [<rate>]
//                         POST the template (benchmarks/mix.py), its placeholders filled,
//                         as fast as it answers (or <rate> batches/s) -> POSTED {...}
//   CLOSE                 close every client             -> CLOSED <n>
//   QUIT                  exit

const http = require('http');
const readline = require('readline');
const { performance, monitorEventLoopDelay } = require('perf_hooks');
const WebSocket = require('ws');

const MAX_SECONDS = Number(process.env.LOADGEN_MAX_SECONDS || 1200);
setTimeout(() => process.exit(3), MAX_SECONDS * 1000).unref();

const { nowS } = require('../clock');

// Latency histogram (microseconds): 10 us buckets below 10 ms, 1 ms buckets below
// 1 s, 100 ms buckets below 60 s, then one overflow bucket. run.py mirrors this.
const NB = 1000 + 990 + 590 + 1;
function bucketOf(us) {
  if (us < 1e4) return Math.floor(us / 10);
  if (us < 1e6) return 1000 + Math.floor((us - 1e4) / 1e3);
  if (us < 6e7) return 1990 + Math.floor((us - 1e6) / 1e5);
  return NB - 1;
}

const MARKER = Buffer.from('"chunk":"R');
// benchmarks/mix.py's bodies carry "~R<run>:<seconds>:" in one string of every event.
const MIX_MARKER = Buffer.from('~R');
const COLON = 58;

const loopDelay = monitorEventLoopDelay({ resolution: 1 });
loopDelay.enable();

function newStats(run) {
  return {
    run,
    runBytes: Buffer.from(run),
    count: 0,
    stale: 0,
    other: 0,
    negative: 0,
    stalledReceived: 0,
    hist: new Uint32Array(NB),
    maxUs: 0,
    firstS: 0,
    lastS: 0,
    closes: {},
    cpu: process.cpuUsage(),
    startS: nowS(),
  };
}

let stats = newStats('-');
const clients = [];

function onMessage(client, data) {
  if (client.stalled) {
    stats.stalledReceived++;
    return;
  }
  let runStart = data.indexOf(MARKER);
  if (runStart >= 0) runStart += MARKER.length;
  else {
    runStart = data.indexOf(MIX_MARKER);
    if (runStart < 0) {
      stats.other++; // connected frames, pongs
      return;
    }
    runStart += MIX_MARKER.length;
  }
  const c1 = data.indexOf(COLON, runStart);
  const c2 = data.indexOf(COLON, c1 + 1);
  const run = stats.runBytes;
  if (c1 - runStart !== run.length || data.compare(run, 0, run.length, runStart, c1) !== 0) {
    stats.stale++; // an event of an earlier run, arriving late
    return;
  }
  const now = nowS();
  let us = (now - parseFloat(data.toString('latin1', c1 + 1, c2))) * 1e6;
  if (us < 0) {
    stats.negative++;
    us = 0;
  }
  stats.hist[bucketOf(us)]++;
  if (us > stats.maxUs) stats.maxUs = us;
  if (stats.count === 0) stats.firstS = now;
  stats.lastS = now;
  stats.count++;
}

function connectOne(url) {
  return new Promise((resolve) => {
    const client = { ws: null, open: false, stalled: false, closed: false };
    const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: 15000 });
    client.ws = ws;
    ws.on('open', () => {
      client.open = true;
      resolve(true);
    });
    ws.on('message', (data) => onMessage(client, data));
    ws.on('error', () => {}); // 'close' follows
    ws.on('close', (code) => {
      const wasOpen = client.open;
      client.open = false;
      client.closed = true;
      stats.closes[code] = (stats.closes[code] || 0) + 1;
      if (!wasOpen) resolve(false);
    });
    clients.push(client);
  });
}

function closeClient(c) {
  return new Promise((resolve) => {
    if (c.closed) return resolve();
    c.ws.once('close', resolve);
    if (c.stalled || !c.open) c.ws.terminate();
    else c.ws.close(1000);
    setTimeout(() => {
      c.ws.terminate();
      resolve();
    }, 3000).unref();
  });
}

function prune() {
  for (let i = clients.length - 1; i >= 0; i--) if (clients[i].closed) clients.splice(i, 1);
}

// Exactly n open, reading clients: connect the missing ones, close the surplus.
async function ensure(url, n) {
  prune();
  const reading = clients.filter((c) => c.open && !c.stalled);
  if (reading.length > n) await Promise.all(reading.slice(n).map(closeClient));
  prune();
  let open = Math.min(reading.length, n);
  let failed = 0;
  let need = n - open;
  const CONCURRENCY = 64;
  while (need > 0) {
    const wave = Math.min(need, CONCURRENCY);
    const results = await Promise.all(Array.from({ length: wave }, () => connectOne(url)));
    const ok = results.filter(Boolean).length;
    open += ok;
    failed += wave - ok;
    need -= ok;
    if (failed > n + 10) break;
    if (ok < wave) await new Promise((r) => setTimeout(r, 100));
  }
  prune();
  return { open, failed };
}

async function dropStalled() {
  const stalled = clients.filter((c) => c.stalled);
  await Promise.all(stalled.map(closeClient));
  prune();
  return stalled.length;
}

function stall(k) {
  let done = 0;
  for (const c of clients) {
    if (done >= k) break;
    if (c.open && !c.stalled) {
      c.stalled = true;
      c.ws.pause(); // stops reading the socket: TCP backpressure reaches the server
      done++;
    }
  }
  return done;
}

function report() {
  const cpu = process.cpuUsage(stats.cpu);
  const wallS = nowS() - stats.startS;
  const hist = [];
  for (let i = 0; i < NB; i++) if (stats.hist[i]) hist.push([i, stats.hist[i]]);
  const cpuUs = cpu.user + cpu.system;
  return {
    run: stats.run,
    count: stats.count,
    stale: stats.stale,
    other: stats.other,
    negative: stats.negative,
    stalledReceived: stats.stalledReceived,
    maxUs: stats.maxUs,
    firstS: stats.firstS,
    lastS: stats.lastS,
    hist,
    closes: stats.closes,
    cpuUs,
    wallS,
    cpuPct: wallS > 0 ? (100 * cpuUs) / 1e6 / wallS : 0,
    loopDelayP99Ms: loopDelay.percentile(99) / 1e6,
    loopDelayMaxMs: loopDelay.max / 1e6,
    open: clients.filter((c) => c.open).length,
    stalled: clients.filter((c) => c.stalled).length,
    rssBytes: process.memoryUsage().rss,
  };
}

async function ingest(url, run, batches, size, concurrency, executionId, maxSeconds) {
  const target = new URL(url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const pad = 'x'.repeat(230); // ~400-byte events as stored, as in the other loads
  const hist = new Uint32Array(NB);
  const result = { sent: 0, accepted: 0, errors: 0, statuses: {}, startS: nowS(), endS: 0 };
  const deadline = result.startS + maxSeconds;

  function body() {
    // A producer stamps when the output happened (the server stamps events without one).
    const stamp = nowS().toFixed(6);
    const when = new Date().toISOString();
    const one =
      `{"type":"tool:output","executionId":"${executionId}","toolUseId":"toolu_ingest_0001",` +
      `"chunk":"R${run}:${stamp}:${pad}","isStderr":false,"timestamp":"${when}"}`;
    return '[' + new Array(size).fill(one).join(',') + ']';
  }

  function post() {
    return new Promise((resolve) => {
      const payload = body();
      const t0 = nowS();
      const req = http.request(
        {
          host: target.hostname,
          port: target.port,
          path: '/api/events',
          method: 'POST',
          agent,
          headers: {
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(payload),
          },
        },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => {
            result.statuses[res.statusCode] = (result.statuses[res.statusCode] || 0) + 1;
            if (res.statusCode === 202) {
              try {
                result.accepted += JSON.parse(Buffer.concat(chunks).toString()).accepted;
              } catch (e) {
                result.errors++;
              }
            }
            hist[bucketOf((nowS() - t0) * 1e6)]++;
            resolve();
          });
        },
      );
      req.setTimeout(15000, () => req.destroy(new Error('timeout')));
      req.on('error', () => {
        result.errors++;
        resolve();
      });
      req.end(payload);
    });
  }

  // A tool use starts before its output, as in a real stream (the store resolves
  // each output's tool from its start).
  await new Promise((resolve) => {
    const start = JSON.stringify({
      type: 'tool:start',
      executionId,
      toolUseId: 'toolu_ingest_0001',
      tool: 'Bash',
      inputSummary: 'benchmark ingest',
    });
    const req = http.request(
      { host: target.hostname, port: target.port, path: '/api/events', method: 'POST', agent,
        headers: { 'content-type': 'application/json' } },
      (res) => res.resume().on('end', resolve),
    );
    req.on('error', resolve);
    req.end(start);
  });
  result.startS = nowS();

  async function worker() {
    while (result.sent < batches && nowS() < deadline) {
      result.sent++;
      await post();
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  result.endS = nowS();
  agent.destroy();
  result.postHist = [];
  for (let i = 0; i < NB; i++) if (hist[i]) result.postHist.push([i, hist[i]]);
  return result;
}

// The placeholders of benchmarks/mix.py: filled in place (same length) in each body.
const STAMP = Buffer.from('<'.repeat(17));
const BATCH = Buffer.from('>'.repeat(8));

function offsetsOf(buf, needle) {
  const out = [];
  for (let i = buf.indexOf(needle); i >= 0; i = buf.indexOf(needle, i + needle.length)) out.push(i);
  return out;
}

async function postMix(url, path, contentType, templateFile, batches, concurrency, maxSeconds, rate) {
  const template = require('fs').readFileSync(templateFile);
  const stamps = offsetsOf(template, STAMP);
  const ids = offsetsOf(template, BATCH);
  const target = new URL(url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const hist = new Uint32Array(NB);
  const result = { sent: 0, ok: 0, accepted: 0, errors: 0, statuses: {}, startS: nowS(), endS: 0 };
  const deadline = result.startS + maxSeconds;

  function body(n) {
    const out = Buffer.from(template);
    const stamp = nowS().toFixed(6).padStart(17, '0');
    for (const i of stamps) out.write(stamp, i, 'latin1');
    const id = String(n % 1e8).padStart(8, '0');
    for (const i of ids) out.write(id, i, 'latin1');
    return out;
  }

  function post(n) {
    return new Promise((resolve) => {
      const payload = body(n);
      const t0 = nowS();
      const req = http.request(
        {
          host: target.hostname,
          port: target.port,
          path,
          method: 'POST',
          agent,
          headers: { 'content-type': contentType, 'content-length': payload.length },
        },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => {
            result.statuses[res.statusCode] = (result.statuses[res.statusCode] || 0) + 1;
            if (res.statusCode >= 200 && res.statusCode < 300) {
              result.ok++;
              if (contentType === 'application/json') {
                try {
                  result.accepted += JSON.parse(Buffer.concat(chunks).toString()).accepted;
                } catch (e) {
                  result.errors++;
                }
              }
            } else result.errors++;
            hist[bucketOf((nowS() - t0) * 1e6)]++;
            resolve();
          });
        },
      );
      req.setTimeout(15000, () => req.destroy(new Error('timeout')));
      req.on('error', () => {
        result.errors++;
        resolve();
      });
      req.end(payload);
    });
  }

  async function worker() {
    while (result.sent < batches && nowS() < deadline) {
      const n = result.sent++;
      if (rate > 0) {
        // Paced: batch n leaves at its scheduled time (a late one leaves at once).
        const wait = result.startS + n / rate - nowS();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait * 1000));
      }
      await post(n);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  result.endS = nowS();
  agent.destroy();
  result.postHist = [];
  for (let i = 0; i < NB; i++) if (hist[i]) result.postHist.push([i, hist[i]]);
  return result;
}

async function closeAll() {
  const n = clients.length;
  await Promise.all(clients.map(closeClient));
  clients.length = 0;
  return n;
}

const say = (line) => process.stdout.write(line + '\n');

async function handle(line) {
  const [cmd, ...args] = line.trim().split(/\s+/);
  switch (cmd) {
    case 'CONNECT':
      say('CONNECTED ' + JSON.stringify(await ensure(args[0], Number(args[1]))));
      break;
    case 'RESET':
      stats = newStats(args[0]);
      loopDelay.reset();
      say('OK');
      break;
    case 'STALL':
      say('OK ' + stall(Number(args[0])));
      break;
    case 'REPORT':
      say('REPORT ' + JSON.stringify(report()));
      break;
    case 'INGEST': {
      const [url, run, batches, size, conc, execId, maxS] = args;
      const r = await ingest(url, run, +batches, +size, +conc, execId, +maxS);
      say('INGESTED ' + JSON.stringify(r));
      break;
    }
    case 'POSTMIX': {
      const [url, path, ctype, file, batches, conc, maxS, rate] = args;
      const r = await postMix(url, path, ctype, file, +batches, +conc, +maxS, +(rate || 0));
      say('POSTED ' + JSON.stringify(r));
      break;
    }
    case 'DROP_STALLED':
      say('OK ' + (await dropStalled()));
      break;
    case 'CLOSE':
      say('CLOSED ' + (await closeAll()));
      break;
    case 'QUIT':
      process.exit(0);
      break;
    case '':
      break;
    default:
      say('ERROR unknown command ' + cmd);
  }
}

// Commands run one after another, in order.
let chain = Promise.resolve();
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  chain = chain.then(() => handle(line)).catch((e) => say('ERROR ' + String(e).replace(/\n/g, ' ')));
});
rl.on('close', () => process.exit(0)); // the runner went away
say('READY');
