// The session page: its history window drawn with the forecasts and bands, and the same
// numbers in a table; polled, so values fed through any replica show within two seconds.
import {
  api,
  cell,
  errorMessage,
  formatNumber,
  headingCell,
  showProblem,
  start,
  Unauthorized,
} from "./ui.js";

const POLL_MS = 1000;
const HORIZON = 10;
const COLORS = { value: "#1f4e9c", forecast: "#d9622b", ahead: "#7a3fb0" };
// Band fills by rank of level, widest first (drawn below the narrower ones).
const BAND_FILLS = ["rgba(217, 98, 43, 0.12)", "rgba(217, 98, 43, 0.22)", "rgba(217, 98, 43, 0.32)"];

const params = new URLSearchParams(location.search);
const sessionId = params.get("id") || "";
const model = params.get("model");

let chart = null;
let chartLevels = "";
let shownStep = null;

function query() {
  return model ? `?model=${encodeURIComponent(model)}` : "";
}

async function fetchHistory() {
  const response = await api(`sessions/${encodeURIComponent(sessionId)}/history${query()}`);
  if (!response.ok) throw new Error(await errorMessage(response));
  return response.json();
}

/** The next HORIZON forecasts from the session's state, or none before its first value. */
async function fetchAhead(history) {
  if (history.step === 0 || history.values.length === 0) return [];
  const body = { session_id: sessionId, horizon: HORIZON };
  if (model) body.model = model;
  const response = await api("forecast", { method: "POST", body });
  if (!response.ok) return [];
  const answer = await response.json();
  return answer.forecasts.map((forecast, index) => ({
    step: history.step + index + 1,
    forecast,
    intervals: answer.intervals[index] || [],
  }));
}

function levelsOf(rows) {
  const levels = new Set();
  for (const row of rows) for (const interval of row.intervals) levels.add(interval.level);
  return [...levels].sort((a, b) => b - a); // widest first
}

function bound(row, level, side) {
  const interval = row.intervals.find((candidate) => candidate.level === level);
  return interval ? interval[side] : null;
}

/** uPlot's columns: steps, values, one-step forecasts, forecasts ahead, then per level its
 * lower and upper bound (history and ahead alike). */
function columns(history, ahead, levels) {
  const rows = [...history.values, ...ahead];
  const data = [
    rows.map((row) => row.step),
    rows.map((row) => (row.value === undefined ? null : row.value)),
    rows.map((row) => (row.value === undefined ? null : row.forecast)),
    rows.map((row) => (row.value === undefined ? row.forecast : null)),
  ];
  for (const level of levels) {
    data.push(rows.map((row) => bound(row, level, "lower")));
    data.push(rows.map((row) => bound(row, level, "upper")));
  }
  return data;
}

function chartOptions(levels) {
  const series = [
    { label: "step" },
    { label: "value", stroke: COLORS.value, width: 2 },
    { label: "one-step forecast", stroke: COLORS.forecast, width: 1.5, dash: [6, 4] },
    { label: `next ${HORIZON} ahead`, stroke: COLORS.ahead, width: 2, dash: [2, 3] },
  ];
  const bands = [];
  levels.forEach((level, rank) => {
    const lower = series.length;
    series.push({ label: `${level} % lower`, stroke: "rgba(217, 98, 43, 0.35)", width: 0.5 });
    series.push({ label: `${level} % upper`, stroke: "rgba(217, 98, 43, 0.35)", width: 0.5 });
    bands.push({ series: [lower + 1, lower], fill: BAND_FILLS[rank % BAND_FILLS.length] });
  });
  const container = document.getElementById("chart");
  return {
    width: Math.max(320, container.clientWidth || 800),
    height: 360,
    series,
    bands,
    scales: { x: { time: false } },
    axes: [{ label: "step" }, { label: "value" }],
  };
}

function draw(history, ahead) {
  const levels = levelsOf([...history.values, ...ahead]);
  const data = columns(history, ahead, levels);
  const container = document.getElementById("chart");
  if (chart === null || chartLevels !== levels.join(",")) {
    if (chart !== null) chart.destroy();
    chart = new uPlot(chartOptions(levels), data, container);
    chartLevels = levels.join(",");
  } else {
    chart.setData(data);
  }
  container.dataset.points = String(history.values.length);
}

function tabulate(history, ahead) {
  const levels = levelsOf([...history.values, ...ahead]).reverse();
  const table = document.getElementById("table");
  const head = document.createElement("tr");
  for (const title of ["step", "value", "forecast", ...levels.map((l) => `${l} % interval`)]) {
    headingCell(head, title);
  }
  table.tHead.replaceChildren(head);
  const rows = [];
  for (const row of [...history.values, ...ahead]) {
    const tr = document.createElement("tr");
    const isAhead = row.value === undefined;
    if (isAhead) tr.className = "ahead";
    cell(tr, String(row.step));
    cell(tr, isAhead ? "(ahead)" : formatNumber(row.value), "number");
    cell(tr, formatNumber(row.forecast), "number");
    for (const level of levels) {
      const lower = bound(row, level, "lower");
      const upper = bound(row, level, "upper");
      const text = lower === null ? "" : `${formatNumber(lower)} to ${formatNumber(upper)}`;
      cell(tr, text, "number");
    }
    rows.push(tr);
  }
  table.tBodies[0].replaceChildren(...rows);
}

function summarize(history) {
  document.getElementById("summary").textContent =
    `model ${history.model} (version ${history.model_version}), step ${history.step}, ` +
    `${history.values.length} values kept`;
}

async function refresh() {
  const history = await fetchHistory();
  showProblem(null);
  if (history.step === shownStep) return;
  const ahead = await fetchAhead(history);
  shownStep = history.step;
  summarize(history);
  draw(history, ahead);
  tabulate(history, ahead);
}

async function poll() {
  try {
    await refresh();
  } catch (error) {
    if (error instanceof Unauthorized) return; // polling resumes when a key is entered
    showProblem(String(error.message || error));
  }
  setTimeout(poll, POLL_MS);
}

document.getElementById("session-name").textContent = sessionId;
document.getElementById("horizon").textContent = String(HORIZON);
start(async () => {
  if (!sessionId) throw new Error("no session: open this page as session?id=<session id>");
  shownStep = null;
  await poll();
});
