// The Jobs tab's dashboard: the jobs table, and status, figures, sample generations and log
// of the picked job (studio/ui/dashboard_js.py). Runs once, when the status panel mounts;
// `props.labels` holds its words.
//
// Light on purpose (issue 10): every POLL_MS, only while the tab is on screen, it asks
// GET api/ui/jobs-table and (while the job may still change) GET /api/jobs/N/dashboard,
// sending the keys of what it shows; the server sends only what changed. Then the loss
// plot (live_plot.js) takes its turn, so the page changes once per tick. No Gradio event
// runs per tick: hidden buttons are clicked when the job moves (status, cancel flag,
// checkpoints: the buttons and the Export panel follow), when a job is added (the picker
// follows) and when a row is clicked (the job is picked).
const labels = props.labels;
const POLL_MS = props.poll_ms;
const PANELS = ["status", "figures", "samples", "logs"];

const state = { job: null, generation: 0, keys: {}, moved: null, done: false, busy: false,
                tableKey: "", jobsKey: null };

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

function markPicked() {
  for (const row of document.querySelectorAll("#jobs-table tr[data-job]")) {
    row.classList.toggle("picked", Number(row.dataset.job) === state.job);
  }
}

async function refreshTable() {
  const response = await fetch(`api/ui/jobs-table?have=${state.tableKey}`, { credentials: "same-origin" });
  if (!response.ok) return;
  const view = await response.json();
  const node = byId("jobs-table");
  if (view.html !== null && node) {
    const top = node.scrollTop;
    node.innerHTML = view.html;
    node.scrollTop = top;
    state.tableKey = view.key;
    markPicked();
  }
  if (state.jobsKey !== null && view.jobs !== state.jobsKey) click(props.jobs_trigger);
  state.jobsKey = view.jobs;
}

function click(id) {
  const button = byId(id);
  if (button) button.click();
}

function pick(row) {
  window.studioPicked = Number(row.dataset.job);
  click(props.pick_trigger);
}

// Rows are redrawn as jobs move: listen once, on the table's container.
document.addEventListener("click", event => {
  const row = event.target.closest && event.target.closest("#jobs-table tr[data-job]");
  if (row) pick(row);
});
document.addEventListener("keydown", event => {
  const row = event.target.closest && event.target.closest("#jobs-table tr[data-job]");
  if (row && (event.key === "Enter" || event.key === " ")) { event.preventDefault(); pick(row); }
});

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
  if (state.moved !== null && view.moved !== state.moved) click(props.moved_trigger);
  state.moved = view.moved;
  state.done = !view.may_change;
}

async function all(force) {
  await refreshTable().catch(error => console.warn("jobs table:", error));
  if (state.job !== null && (force || !state.done)) await refresh();
  if (window.studioLivePlot) await window.studioLivePlot.tick();
}

function tick(force) {
  if (state.busy || !onScreen()) return;
  state.busy = true;
  all(force).catch(error => console.warn("dashboard:", error)).finally(() => { state.busy = false; });
}

window.studioDashboard = {
  show(job) {
    state.generation += 1;
    state.job = job === null || job === undefined || job === "" ? null : Number(job);
    state.keys = {}; state.moved = null; state.done = false; state.busy = false;
    markPicked();
    if (state.job === null) clear(labels.none);
    tick(true);
  },
  poke() { state.done = false; tick(true); },
};
if (window.studioJob !== undefined) window.studioDashboard.show(window.studioJob);
else tick(true); // the table at once
setInterval(tick, POLL_MS);
