// The Jobs tab's dashboard: status, figures, sample generations and log of the picked job
// (studio/ui/dashboard_js.py). Runs once, when the status panel mounts; `props.labels`
// holds its words.
//
// Light on purpose (issue 10): every POLL_MS, and only while the panel is on screen and the
// job may still change, it asks GET /api/jobs/N/dashboard, sending the keys of what it
// shows, and the server sends only the panels whose key changed. No Gradio event runs per
// tick: when the job moves (status, cancel flag, checkpoints) it clicks a hidden button,
// whose event refreshes the buttons, the jobs list and the Export panel once.
const labels = props.labels;
const POLL_MS = props.poll_ms;
const PANELS = ["status", "figures", "samples", "logs"];

const state = { job: null, generation: 0, keys: {}, moved: null, done: false, busy: false };

const byId = id => document.getElementById(id);

function escapeText(text) {
  const div = document.createElement("div");
  div.textContent = text;
  return div.innerHTML;
}

function put(name, value) {
  if (name === "status" || name === "figures") {
    const node = byId(`job-${name}`);
    if (node) node.innerHTML = value;
  } else if (name === "samples") {
    const node = byId("job-samples");
    if (!node) return false;
    const top = node.scrollTop; // a new step's rows must not throw the reader back to the top
    node.innerHTML = value;
    node.scrollTop = top;
  } else if (name === "logs") {
    const box = byId("job-logs-text");
    if (!box) return false;
    const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4 || box.value === "";
    box.value = value;
    if (atEnd) box.scrollTop = box.scrollHeight; // follow the log unless the reader scrolled up
  }
  return true;
}

function clear(message) {
  state.keys = {};
  put("status", `<div>${escapeText(message)}</div>`);
  for (const name of ["figures", "samples"]) put(name, "");
  put("logs", "");
}

function onScreen() {
  return !document.hidden && element.offsetParent !== null;
}

async function refresh() {
  const generation = state.generation, job = state.job;
  const query = new URLSearchParams();
  for (const name of PANELS) if (state.keys[name]) query.set(name, state.keys[name]);
  let response;
  try {
    response = await fetch(`api/jobs/${job}/dashboard?${query}`, { credentials: "same-origin" });
  } catch (error) { // the server is restarting: say so, keep the rest, try again next tick
    if (generation === state.generation) {
      put("figures", `<p>${escapeText(labels.offline)}</p>`);
      delete state.keys.figures;
    }
    return;
  }
  if (generation !== state.generation) return;
  if (response.status === 404) { clear(labels.gone); state.done = true; return; }
  if (!response.ok) return;
  const view = await response.json();
  if (generation !== state.generation) return;
  for (const name of PANELS) {
    const value = view.parts[name];
    if (value !== null && value !== undefined && put(name, value)) state.keys[name] = view.keys[name];
  }
  if (state.moved !== null && view.moved !== state.moved) {
    const trigger = byId(props.moved_trigger);
    if (trigger) trigger.click();
  }
  state.moved = view.moved;
  state.done = !view.may_change;
}

function tick(force) {
  if (state.job === null || state.busy || (state.done && !force) || !onScreen()) return;
  state.busy = true;
  refresh().catch(error => console.warn("dashboard:", error)).finally(() => { state.busy = false; });
}

window.studioDashboard = {
  show(job) {
    state.generation += 1;
    state.job = job === null || job === undefined || job === "" ? null : Number(job);
    state.keys = {}; state.moved = null; state.done = false; state.busy = false;
    if (state.job === null) { clear(labels.none); return; }
    tick(true);
  },
  poke() { state.done = false; tick(true); },
};
if (window.studioJob !== undefined) window.studioDashboard.show(window.studioJob);
setInterval(tick, POLL_MS);
