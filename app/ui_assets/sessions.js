// The sessions page: the caller's sessions (GET /sessions, a page at a time).
import { api, cell, errorMessage, formatNumber, start } from "./ui.js";

const PAGE_SIZE = 50;
let nextCursor = null;

function sessionLink(session) {
  const link = document.createElement("a");
  const search = new URLSearchParams({ id: session.session_id });
  if (session.model && session.model !== "default") search.set("model", session.model);
  link.href = `session?${search}`;
  link.textContent = session.session_id;
  return link;
}

function coverage(recent) {
  if (!recent) return "";
  return recent.coverage.map((c) => `${c.level} %: ${formatNumber(c.coverage)}`).join(", ");
}

function addRows(sessions) {
  const body = document.querySelector("#sessions tbody");
  for (const session of sessions) {
    const row = document.createElement("tr");
    cell(row, "").appendChild(sessionLink(session));
    cell(row, session.model || "default");
    cell(row, String(session.step), "number");
    cell(row, new Date(session.last_used_at).toLocaleString());
    cell(row, session.model_version);
    const recent = session.skill && session.skill.recent;
    cell(row, recent ? formatNumber(recent.skill) : "", "number");
    cell(row, coverage(recent));
    body.appendChild(row);
  }
}

async function loadPage(cursor) {
  const search = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (cursor) search.set("cursor", cursor);
  const response = await api(`sessions?${search}`);
  if (!response.ok) throw new Error(await errorMessage(response));
  const page = await response.json();
  addRows(page.sessions);
  nextCursor = page.next_cursor;
  document.getElementById("more").hidden = !nextCursor;
  const body = document.querySelector("#sessions tbody");
  document.getElementById("empty").hidden = body.children.length > 0;
}

document.getElementById("more").addEventListener("click", () => loadPage(nextCursor));
document.getElementById("open-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = document.getElementById("open-id").value.trim();
  if (id) location.href = `session?${new URLSearchParams({ id })}`;
});
start(async () => {
  document.querySelector("#sessions tbody").replaceChildren();
  await loadPage(null);
});
