// The models page: every served model's version, training settings, report, search table and
// evaluation plot (GET /models, GET /models/{name}, GET /models/{name}/evaluation.png).
import { api, cell, errorMessage, formatNumber, headingCell, start } from "./ui.js";

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function display(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return formatNumber(value);
  if (Array.isArray(value)) return value.map(display).join(", ");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** A definition list of an object's plain fields (nested objects as JSON). */
function facts(object) {
  const list = element("dl", undefined, "facts");
  for (const [name, value] of Object.entries(object || {})) {
    list.appendChild(element("dt", name.replaceAll("_", " ")));
    list.appendChild(element("dd", display(value)));
  }
  return list;
}

/** A table of rows that share their fields (the training job's search). */
function table(rows) {
  const node = element("table");
  const head = document.createElement("tr");
  const names = Object.keys(rows[0]);
  for (const name of names) headingCell(head, name.replaceAll("_", " "));
  node.createTHead().appendChild(head);
  const body = node.createTBody();
  for (const row of rows) {
    const tr = document.createElement("tr");
    for (const name of names) cell(tr, display(row[name]), typeof row[name] === "number" ? "number" : "");
    body.appendChild(tr);
  }
  return node;
}

/** The evaluation plot, fetched with the key (an <img src> could not send it). */
async function plot(name) {
  const response = await api(`models/${encodeURIComponent(name)}/evaluation.png`);
  if (!response.ok) return element("p", `No evaluation plot: ${await errorMessage(response)}`, "summary");
  const image = element("img", undefined, "plot");
  image.alt = `evaluation plot of model ${name}`;
  image.src = URL.createObjectURL(await response.blob());
  return image;
}

async function section(info) {
  const part = element("section");
  part.dataset.model = info.name;
  part.appendChild(element("h2", `${info.name}: version ${info.version || "none"}`));
  if (info.problem) part.appendChild(element("p", `Not served: ${info.problem}`, "problem"));
  if (info.refused) {
    part.appendChild(
      element("p", `A newer artifact was refused (${info.refused.artifact}): ${info.refused.reason}`, "problem"),
    );
  }
  if (!info.version) return part;
  const response = await api(`models/${encodeURIComponent(info.name)}/manifest`);
  if (!response.ok) {
    part.appendChild(element("p", await errorMessage(response), "problem"));
    return part;
  }
  const manifest = await response.json();
  part.appendChild(facts({ created_at: manifest.created_at, artifact: info.artifact, loaded_at: info.loaded_at }));
  part.appendChild(element("h3", "Training settings"));
  part.appendChild(facts({ ...manifest.training, transform: manifest.transform, units: manifest.architecture.units }));
  part.appendChild(element("h3", "Training report"));
  part.appendChild(facts(manifest.metrics));
  if (manifest.search && manifest.search.length) {
    part.appendChild(element("h3", "Search"));
    part.appendChild(table(manifest.search));
  }
  part.appendChild(element("h3", "Evaluation"));
  part.appendChild(await plot(info.name));
  return part;
}

start(async () => {
  const response = await api("models");
  if (!response.ok) throw new Error(await errorMessage(response));
  const { models } = await response.json();
  const main = document.getElementById("models");
  main.replaceChildren();
  for (const info of models) main.appendChild(await section(info));
});
