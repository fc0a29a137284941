'use strict';
// Baseline: the source plan's own design (OBS-600 / OBS-602), in Node with `ws`.
//
// ObservabilityStreamService is an EventEmitter; broadcast() keeps a replay buffer
// and emits to `observability:<executionId>` and `observability:all`; each
// connection's handler checks its topics and calls ws.send(JSON.stringify(event)),
// i.e. the event is serialized once per client, as the plan writes it. Only
// setMaxListeners differs (100 in the plan, which merely warns beyond that).
//
// Same control protocol, event and schedule as benchmarks/servers/trio_obs_server.py:
// prints READY <port>; COUNT -> COUNT <n>; EMIT <run> <rate> <count> <maxSeconds>
// -> EMITTED {...}; QUIT. A pacer worker thread sleeps precisely (Atomics.wait) until
// each scheduled time and wakes the main thread, since setTimeout has 1 ms grain.

const http = require('http');
const readline = require('readline');
const { EventEmitter } = require('events');
const { Worker } = require('worker_threads');
const { performance } = require('perf_hooks');
const { WebSocketServer, WebSocket } = require('ws');

const MAX_SECONDS = Number(process.env.BENCH_MAX_SECONDS || 1200);
setTimeout(() => process.exit(3), MAX_SECONDS * 1000).unref();
const EVENT_BYTES = Number(process.env.BENCH_EVENT_BYTES || 400);

const { nowS } = require('../../clock');

// ---------------------------------------------------------------- the plan's service

class ObservabilityStreamService extends EventEmitter {
  constructor() {
    super();
    this.eventBuffer = new Map();
    this.maxBufferSize = 100;
    this.setMaxListeners(0);
  }

  emitToolOutput(executionId, toolUseId, chunk, isStderr = false) {
    const event = {
      type: 'tool:output',
      timestamp: new Date().toISOString(),
      executionId,
      toolUseId,
      chunk,
      isStderr,
    };
    this.broadcast(executionId, event);
  }

  broadcast(executionId, event) {
    this.addToBuffer(executionId, event);
    this.emit(`observability:${executionId}`, event);
    this.emit('observability:all', event);
  }

  addToBuffer(executionId, event) {
    if (!this.eventBuffer.has(executionId)) this.eventBuffer.set(executionId, []);
    const buffer = this.eventBuffer.get(executionId);
    buffer.push(event);
    if (buffer.length > this.maxBufferSize) buffer.shift();
  }

  getBufferedEvents(executionId) {
    return this.eventBuffer.get(executionId) || [];
  }

  getGlobalListenerCount() {
    return this.listenerCount('observability:all');
  }
}

const observabilityStream = new ObservabilityStreamService();
const clientSubscriptions = new WeakMap();

const TOPIC_MAP = {
  'transcript:entry': 'transcript',
  'tool:start': 'tools',
  'tool:end': 'tools',
  'tool:output': 'tools',
  'assertion:result': 'assertions',
  'skill:start': 'skills',
  'skill:end': 'skills',
  'messagebus:event': 'messagebus',
  'wave:status': 'waves',
  'agent:heartbeat': 'agents',
  'execution:status': 'execution',
};

function shouldSendEvent(event, topics, filters) {
  if (topics.has('all')) return true;
  const eventTopic = TOPIC_MAP[event.type];
  if (!eventTopic || !topics.has(eventTopic)) return false;
  if (filters.taskId && 'taskId' in event && event.taskId !== filters.taskId) return false;
  if (filters.tools && event.type === 'tool:start' && !filters.tools.includes(event.tool)) {
    return false;
  }
  return true;
}

function setupObservabilityStreaming(ws, executionId) {
  clientSubscriptions.set(ws, { executionId, topics: new Set(['all']), filters: {} });
  const eventHandler = (event) => {
    const state = clientSubscriptions.get(ws);
    if (!state) return;
    if (!shouldSendEvent(event, state.topics, state.filters)) return;
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(event));
  };
  if (executionId && executionId !== 'all') {
    observabilityStream.on(`observability:${executionId}`, eventHandler);
    for (const event of observabilityStream.getBufferedEvents(executionId)) {
      ws.send(JSON.stringify(event));
    }
  }
  observabilityStream.on('observability:all', eventHandler);
  ws._obsHandler = eventHandler;
  ws._obsExecId = executionId;
  ws.send(
    JSON.stringify({
      type: 'observability:connected',
      timestamp: new Date().toISOString(),
      executionId,
      message:
        executionId === 'all'
          ? 'Connected to all observability events'
          : `Connected to execution ${executionId}`,
      bufferedEventCount:
        executionId !== 'all' ? observabilityStream.getBufferedEvents(executionId).length : 0,
    }),
  );
}

function cleanupObservabilityStreaming(ws) {
  const handler = ws._obsHandler;
  const execId = ws._obsExecId;
  if (handler) {
    if (execId && execId !== 'all') observabilityStream.off(`observability:${execId}`, handler);
    observabilityStream.off('observability:all', handler);
  }
  clientSubscriptions.delete(ws);
}

const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
const wss = new WebSocketServer({ server, perMessageDeflate: false });
wss.on('connection', (ws, req) => {
  const observability = new URL(req.url, 'http://localhost').searchParams.get('observability');
  if (!observability) {
    ws.close(1008, 'missing observability');
    return;
  }
  setupObservabilityStreaming(ws, observability);
  ws.on('message', (data) => {
    try {
      const message = JSON.parse(data.toString());
      if (message.type === 'ping') {
        ws.send(JSON.stringify({ type: 'pong', timestamp: new Date().toISOString() }));
      }
    } catch (e) {
      // the plan answers INVALID_MESSAGE; the load generator never sends anything
    }
  });
  ws.on('error', () => {});
  ws.on('close', () => cleanupObservabilityStreaming(ws));
});

// ---------------------------------------------------------------- scheduled emission

const EXECUTION = 'bench-exec';
const TOOL_USE = 'toolu_bench_0001';
const MAX_BATCH = 200; // overdue events emitted before yielding to I/O (as the other servers)

function chunkOf(run, scheduled, pad) {
  return `R${run}:${scheduled.toFixed(6)}:` + 'x'.repeat(pad);
}

const PAD = (() => {
  const probe = {
    type: 'tool:output',
    timestamp: new Date().toISOString(),
    executionId: EXECUTION,
    toolUseId: TOOL_USE,
    chunk: chunkOf('0', 0, 0),
    isStderr: false,
  };
  return Math.max(0, EVENT_BYTES - JSON.stringify(probe).length);
})();

const flag = new Int32Array(new SharedArrayBuffer(4)); // 1 = a wake-up is pending
const pacer = new Worker(
  `
  const { parentPort } = require('worker_threads');
  const { performance } = require('perf_hooks');
  // The pacer only sleeps until a scheduled time; a few microseconds do not matter here.
  const nowS = () => Number(process.hrtime.bigint()) / 1e9;
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  parentPort.on('message', ({ t0, rate, count, flag }) => {
    const pending = new Int32Array(flag);
    for (let i = 0; i < count; i++) {
      const delay = t0 + i / rate - nowS();
      if (delay > 0) Atomics.wait(sleeper, 0, 0, delay * 1000);
      if (Atomics.compareExchange(pending, 0, 0, 1) === 0) parentPort.postMessage(0);
    }
  });
  `,
  { eval: true },
);
pacer.unref();

let emission = null;

function emitDue() {
  Atomics.store(flag, 0, 0);
  const e = emission;
  if (e === null) return;
  const now = nowS();
  if (now > e.deadline) return finish();
  const due = now >= e.t0 ? Math.min(e.count, Math.floor((now - e.t0) * e.rate) + 1) : 0;
  if (due <= e.emitted) return;
  e.worstLag = Math.max(e.worstLag, now - (e.t0 + e.emitted / e.rate));
  const end = Math.min(due, e.emitted + MAX_BATCH);
  for (let i = e.emitted; i < end; i++) {
    observabilityStream.emitToolOutput(EXECUTION, TOOL_USE, chunkOf(e.run, e.t0 + i / e.rate, PAD));
    e.emitted = i + 1;
    if (nowS() > e.deadline) break;
  }
  e.batches++;
  if (e.emitted >= e.count || nowS() > e.deadline) finish();
  else if (e.emitted < due) setImmediate(emitDue); // more is overdue: let I/O run first
}

function finish() {
  const e = emission;
  emission = null;
  clearTimeout(e.timer);
  say(
    'EMITTED ' +
      JSON.stringify({
        run: e.run,
        emitted: e.emitted,
        count: e.count,
        batches: e.batches,
        worstLagMs: Math.round(e.worstLag * 1e6) / 1e3,
        seconds: Math.round((nowS() - e.t0) * 1e3) / 1e3,
      }),
  );
}

pacer.on('message', emitDue);

function startEmission(run, rate, count, maxSeconds) {
  const t0 = nowS() + 0.05;
  emission = { run, rate, count, t0, deadline: t0 + maxSeconds, emitted: 0, batches: 0, worstLag: 0 };
  // The deadline holds even when the pacer has nothing more to say.
  emission.timer = setTimeout(() => emission && finish(), (maxSeconds + 0.1) * 1000);
  pacer.postMessage({ t0, rate, count, flag: flag.buffer });
}

// ---------------------------------------------------------------- control

const say = (line) => process.stdout.write(line + '\n');

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const [cmd, ...args] = line.trim().split(/\s+/);
  if (cmd === 'COUNT') say('COUNT ' + observabilityStream.getGlobalListenerCount());
  else if (cmd === 'EMIT') startEmission(args[0], Number(args[1]), Number(args[2]), Number(args[3]));
  else if (cmd === 'QUIT') process.exit(0);
  else if (cmd) say('ERROR unknown command ' + cmd);
});
rl.on('close', () => process.exit(0));

server.listen(0, '127.0.0.1', 4096, () => say('READY ' + server.address().port));
