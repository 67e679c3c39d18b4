// What every page shares: API calls with the tab's key, the key prompt, problems, formatting.
// The pages call only the public API, so they show exactly what API clients get.

const KEY_STORAGE = "forecast-ui-api-key";

/** Raised after a 401: the key prompt is showing. */
export class Unauthorized extends Error {}

/** The API URL of `path`, relative to the pages (they live in /ui/), so that the service may
 * sit under any path prefix behind a proxy. */
export function apiUrl(path) {
  return new URL(`../${path}`, document.baseURI).toString();
}

function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

/** Whether the service asks for API keys: its OpenAPI document (open without a key) declares
 * a bearer scheme then. Asking it first spares a refused call before the key prompt. */
async function keysRequired() {
  const response = await fetch(apiUrl("openapi.json"));
  if (!response.ok) return false;
  const schema = await response.json();
  return Boolean(schema.components && schema.components.securitySchemes);
}

/** The error message of an API answer in the service's one error shape. */
export async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) {
    // not JSON: fall through to the status line
  }
  return `${response.status} ${response.statusText}`;
}

/** fetch() for the API, with the tab's key. On 401 the key prompt shows and Unauthorized is
 * thrown; every other answer is returned as it is. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = {};
  const key = storedKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(apiUrl(path), init);
  if (response.status === 401) {
    const problem = await errorMessage(response);
    askForKey(key ? `The key was refused: ${problem}` : "This service needs an API key.");
    throw new Unauthorized(problem);
  }
  return response;
}

let onKeyEntered = () => {};

function askForKey(message) {
  const form = document.getElementById("key-form");
  document.getElementById("key-message").textContent = message;
  form.hidden = false;
  document.getElementById("key-input").focus();
}

/** Start the page: ask for a key first if the service needs one and the tab has none, then
 * run `load`, and again whenever a key is entered. */
export async function start(load) {
  const form = document.getElementById("key-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("key-input");
    const key = input.value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    input.value = "";
    form.hidden = true;
    onKeyEntered();
  });
  onKeyEntered = () => run(load);
  if (!storedKey() && (await keysRequired())) {
    askForKey("This service needs an API key.");
    return;
  }
  await run(load);
}

async function run(load) {
  showProblem(null);
  try {
    await load();
  } catch (error) {
    if (!(error instanceof Unauthorized)) showProblem(String(error.message || error));
  }
}

/** Show a problem above the page's content (null clears it). */
export function showProblem(message) {
  const box = document.getElementById("problem");
  box.textContent = message || "";
  box.hidden = !message;
}

/** A number for people: up to 6 significant digits, "" for none. */
export function formatNumber(value) {
  if (value === null || value === undefined) return "";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  return Number(value.toPrecision(6)).toString();
}

/** A cell of a table: text only (never HTML from the API). */
export function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

/** A heading cell. */
export function headingCell(row, text) {
  const th = document.createElement("th");
  th.textContent = text;
  th.scope = "col";
  row.appendChild(th);
  return th;
}
