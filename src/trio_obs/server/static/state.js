// The page's shared mutable state, in one object whose fields every module reads and writes
// (a module cannot assign another module's exported `let`). Module-private state stays in
// its module.

import { TOPICS } from "./events.js";

export const state = {
  token: null, // the access token, or null (token.js keeps it in sessionStorage)
  authBlocked: false, // the server wants a (new) token: the form is shown, the sockets closed
  allSocket: null, // the "all" stream's LiveSocket: keeps the execution list live
  executions: new Map(), // executionId -> entry (the server's figures, kept live)
  listReady: false, // the first listing is in: runs that start from now on are new
  listDirty: false, // the execution list must be redrawn in the next frame
  runIds: null, // the runs that pass the list's agent/errors filters (null: no such filter)
  follow: false, // follow mode: a run that starts is shown at once
  view: null, // the run being watched (run.js: newRun)
  paused: false, // the timeline does not follow the stream's end
  unseen: 0, // events that arrived while paused
  filter: {
    topics: new Set(TOPICS), task: "", q: "", errors: false, type: "", tool: "", agent: "",
  },
  timeline: null, // the timeline's VirtualList (timeline.js: initTimeline)
  spanList: null, // the span view's VirtualList (treeview.js: initTreeView)
};
