// The frame: all DOM work happens once per animation frame, however many events arrive.
// schedule() asks for one; app.js says what a frame draws (onFrame).

// While events stream in, the DOM is updated at most every STREAM_FRAME_MS; anything the
// user does (scroll, click, keys, filters) is shown in the next animation frame.
const STREAM_FRAME_MS = 50;
let scheduled = false;
let urgent = false;
let lastFrame = 0;
let frameTimer = null;
let draw = () => {};

/** What each frame does (app.js: its frame()). */
export function onFrame(fn) {
  draw = fn;
}

/** Ask for a frame; `now`: in the next animation frame, even while events stream in. */
export function schedule(now = false) {
  if (now) urgent = true;
  if (scheduled && now && frameTimer !== null && !document.hidden) {
    // A frame put off while events stream: bring it forward to the next animation frame.
    clearTimeout(frameTimer);
    frameTimer = null;
    requestAnimationFrame(runFrame);
    return;
  }
  if (scheduled) return;
  scheduled = true;
  if (document.hidden) {
    setTimeout(runFrame, 250);
    return;
  }
  const wait = urgent ? 0 : lastFrame + STREAM_FRAME_MS - performance.now();
  if (wait <= 1) requestAnimationFrame(runFrame);
  else {
    frameTimer = setTimeout(() => {
      frameTimer = null;
      requestAnimationFrame(runFrame);
    }, wait);
  }
}

function runFrame() {
  scheduled = false;
  urgent = false;
  clearTimeout(frameTimer);
  frameTimer = null;
  lastFrame = performance.now();
  draw();
}
