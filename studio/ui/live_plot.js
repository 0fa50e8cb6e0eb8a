// The Jobs tab's live loss plot (studio/ui/live_plot.py). Runs once, when the component
// mounts; `element` is the component, `props.labels` its words.
//
// Light on purpose: at each of the dashboard's ticks (dashboard.js) the page asks the REST
// API only for points after the last train step it has (GET /api/jobs/N/metrics?after_step=S),
// appends them with Plotly.extendTraces (no re-render of the plot), and asks only while the
// plot is on screen and the job may still change. An eval point can land one step after the
// train point of its step (the base model's at step 0 after step 1, the final one after the
// last step), so it asks from two steps back and keeps only points newer than each trace's
// last.
const labels = props.labels;
const canvas = element.querySelector(".live-plot-canvas");
const SETTLE_MS = 10000; // events of a finished job may still land this long after it ended
const SMOOTHING = 0.9; // studio.core.timing.SMOOTHING
const TRACES = ["train-loss", "eval-loss", "exact-match", "smoothed-loss"];
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

const state = { job: null, generation: 0, last: [-1, -1, -1, -1], busy: false, ended: null, done: false,
                smooth: false, average: 0, count: 0 };

function layout(empty) {
  return {
    template: "plotly_white", height: 380, margin: { l: 50, r: 50, t: 40, b: 10 }, hovermode: "x unified",
    title: { text: labels.title, font: { size: 14 } },
    legend: { orientation: "h", yanchor: "top", y: -0.2, xanchor: "center", x: 0.5 },
    xaxis: { title: { text: labels.step }, rangemode: "tozero" },
    yaxis: { title: { text: labels.loss }, rangemode: "tozero" },
    yaxis2: { title: { text: labels.exact_match_axis }, overlaying: "y", side: "right", range: [0, 1.02], tickformat: ".0%" },
    annotations: empty ? [{ text: labels.empty, showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }] : [],
  };
}

function emptyTraces() {
  return [
    { x: [], y: [], mode: "lines", name: labels.train_loss, meta: TRACES[0], line: { color: "#2563eb" } },
    { x: [], y: [], mode: "markers+lines", name: labels.eval_loss, meta: TRACES[1],
      marker: { size: 9, color: "#f97316" }, line: { dash: "dot", color: "#f97316" } },
    { x: [], y: [], mode: "markers+lines", name: labels.exact_match, meta: TRACES[2], yaxis: "y2",
      marker: { symbol: "diamond", size: 9, color: "#16a34a" }, line: { color: "#16a34a" } },
    { x: [], y: [], mode: "lines", name: labels.smoothed, meta: TRACES[3], visible: state.smooth,
      line: { color: "#1e3a8a", width: 3 } },
  ];
}

// New points per trace: [[xs...], ...] and [[ys...], ...], in trace order.
function split(points) {
  const xs = [[], [], [], []], ys = [[], [], [], []];
  const add = (i, step, value) => {
    if (value === null || value === undefined || step <= state.last[i]) return;
    xs[i].push(step); ys[i].push(value); state.last[i] = step;
  };
  for (const p of points) {
    if (p.split === "train") {
      if (p.loss !== null && p.step > state.last[0]) {
        state.count += 1;
        state.average = SMOOTHING * state.average + (1 - SMOOTHING) * p.loss;
        add(3, p.step, state.average / (1 - Math.pow(SMOOTHING, state.count)));
      }
      add(0, p.step, p.loss);
    } else if (p.split === "eval") {
      add(1, p.step, p.loss);
      add(2, p.step, p.exact_match);
    }
  }
  return { xs, ys, count: xs.reduce((n, x) => n + x.length, 0) };
}

async function points(after) {
  const response = await fetch(`api/jobs/${state.job}/metrics?after_step=${after}`, { credentials: "same-origin" });
  return response.ok ? response.json() : null;
}

// Draw the job from scratch: when it is picked, and once after it settled.
async function redraw() {
  const generation = state.generation;
  const all = await points(-1);
  if (generation !== state.generation || all === null) return;
  state.last = [-1, -1, -1, -1]; state.average = 0; state.count = 0;
  const { xs, ys, count } = split(all);
  const traces = emptyTraces().map((trace, i) => ({ ...trace, x: xs[i], y: ys[i] }));
  await window.Plotly.react(canvas, traces, layout(count === 0), { responsive: true, displaylogo: false });
}

async function extend() {
  const generation = state.generation;
  const fresh = await points(Math.max(-1, state.last[0] - 2));
  if (generation !== state.generation || fresh === null) return;
  const wasEmpty = state.last.every(step => step < 0);
  const { xs, ys, count } = split(fresh);
  if (!count) return;
  window.Plotly.extendTraces(canvas, { x: xs, y: ys }, [0, 1, 2, 3]);
  if (wasEmpty) window.Plotly.relayout(canvas, { annotations: [] });
}

function onScreen() {
  return !document.hidden && canvas.offsetParent !== null;
}

function jobStatus() {
  const badge = document.querySelector("#job-status [data-status]");
  return badge ? badge.dataset.status : null;
}

// Redraws and extensions run one at a time: an extension landing on a redraw made while
// it waited for its points would append them twice.
let chain = Promise.resolve();
function serial(work) {
  chain = chain.then(work).catch(error => console.warn("live plot:", error));
  return chain;
}

// Called by the dashboard's tick (dashboard.js), so the page changes once per tick.
async function tick() {
  const finished = FINISHED.has(jobStatus());
  if (!finished) { state.ended = null; state.done = false; } // (the badge may still show the last job)
  if (state.job === null || state.busy || state.done || !window.Plotly || !onScreen()) return;
  state.busy = true;
  return serial(async () => {
    if (finished) {
      state.ended = state.ended || Date.now();
      if (Date.now() - state.ended > SETTLE_MS) {
        await redraw();
        state.done = true;
        return;
      }
    }
    await extend();
  }).finally(() => { state.busy = false; });
}

window.studioLivePlot = {
  tick,
  show(job) {
    state.generation += 1;
    state.job = job === null || job === undefined || job === "" ? null : Number(job);
    state.ended = null; state.done = false;
    if (state.job === null) {
      if (window.Plotly) window.Plotly.react(canvas, emptyTraces(), layout(true));
      return;
    }
    serial(redraw);
  },
  smooth(on) {
    state.smooth = Boolean(on);
    if (window.Plotly && canvas.data) window.Plotly.restyle(canvas, { visible: state.smooth }, [3]);
  },
};
if (window.studioJob !== undefined) window.studioLivePlot.show(window.studioJob); // picked before the plot mounted
else if (window.Plotly) window.Plotly.newPlot(canvas, emptyTraces(), layout(true), { responsive: true, displaylogo: false });
