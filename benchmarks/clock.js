"use strict";
// CLOCK_MONOTONIC in seconds, shared by the Node load generator and the Node baseline so
// that their stamps and Python's time.monotonic() read one clock. performance.now() is
// cheap and reads the same clock as process.hrtime; the offset between them is taken
// from the tightest of 200 bracketed readings, so a preemption between two reads cannot
// skew it.
function monotonicOriginMs() {
  let best = Infinity;
  let origin = 0;
  for (let i = 0; i < 200; i++) {
    const a = performance.now();
    const h = Number(process.hrtime.bigint()) / 1e6;
    const b = performance.now();
    if (b - a < best) {
      best = b - a;
      origin = h - (a + b) / 2;
    }
  }
  return origin;
}
const ORIGIN_MS = monotonicOriginMs();
const nowS = () => (ORIGIN_MS + performance.now()) / 1e3;

module.exports = { nowS };
