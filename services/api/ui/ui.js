// Shoal's web view: the cluster from /shoal/state, redrawn as the event log moves (server-sent
// events from /shoal/ui/events), or replayed as of any entry with the slider (/shoal/state?at=SEQ).
"use strict";

const $ = (selector) => document.querySelector(selector);
const SHOWN = new Set(["running", "ready"]);
let latest = 0;       // the newest log sequence this page has heard of
let viewing = null;   // null: live; otherwise the sequence being replayed
let timer = null;

function element(tag, attrs, text) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, value);
  if (text !== undefined) el.textContent = text;
  return el;
}

async function fetchState(at) {
  const response = await fetch(at === null ? "/shoal/state" : `/shoal/state?at=${at}`);
  if (!response.ok) throw new Error(`GET /shoal/state: ${response.status}`);
  return response.json();
}

function replicas(service) {
  const mode = (service.Spec || {}).Mode || {};
  return mode.Replicated ? (mode.Replicated.Replicas ?? 1) : null;
}

function taskName(task, names) {
  return `${names.get(task.ServiceID) || task.ServiceName || task.ServiceID}.${task.Slot || task.NodeID}`;
}

function renderNodes(doc, names) {
  const columns = $("#nodes");
  columns.replaceChildren();
  const nodes = [...doc.Nodes].sort((a, b) => a.Description.Hostname.localeCompare(b.Description.Hostname));
  for (const node of nodes) {
    const state = node.Status.State;
    const column = element("div", {class: `node ${state}`, "data-node-id": node.ID, "data-state": state});
    column.append(element("h3", {}, node.Description.Hostname || node.ID));
    column.append(element("div", {class: "meta"}, `${state} · ${node.Spec.Availability} · ${node.Spec.Role}`));
    const tasks = doc.Tasks.filter((t) => t.NodeID === node.ID && (SHOWN.has(t.DesiredState) || t.Status.State === "running"));
    for (const task of tasks.sort((a, b) => taskName(a, names).localeCompare(taskName(b, names)))) {
      const box = element("div", {class: "task", "data-state": task.Status.State, "data-task-id": task.ID,
                                  title: `${task.Status.State}: ${task.Status.Message || ""}`}, taskName(task, names));
      column.append(box);
    }
    columns.append(column);
  }
}

function renderServices(doc) {
  const body = $("#services tbody");
  body.replaceChildren();
  for (const service of [...doc.Services].sort((a, b) => a.Spec.Name.localeCompare(b.Spec.Name))) {
    const meant = doc.Tasks.filter((t) => t.ServiceID === service.ID && t.DesiredState === "running");
    const running = meant.filter((t) => t.Status.State === "running").length;
    const desired = replicas(service) ?? meant.length;
    const row = element("tr", {"data-service": service.Spec.Name, class: running < desired ? "short" : ""});
    row.append(element("td", {}, service.Spec.Name));
    row.append(element("td", {}, replicas(service) === null ? "global" : "replicated"));
    row.append(element("td", {class: "count"}, `${running}/${desired}`));
    body.append(row);
  }
}

function renderPending(doc, names) {
  const list = $("#pending");
  list.replaceChildren();
  for (const task of doc.Tasks.filter((t) => t.Status.State === "pending" && SHOWN.has(t.DesiredState))) {
    list.append(element("li", {"data-task-id": task.ID}, `${taskName(task, names)}: ${task.Status.Err || "waiting"}`));
  }
}

function render(doc) {
  const names = new Map(doc.Services.map((s) => [s.ID, s.Spec.Name]));
  renderNodes(doc, names);
  renderServices(doc);
  renderPending(doc, names);
  document.body.dataset.seq = doc.Seq;
  $("#position").textContent = `as of log entry ${doc.Seq}`;
}

function setMode() {
  const past = viewing !== null;
  $("#mode").textContent = past ? `replaying entry ${viewing}` : "live";
  $("#mode").className = past ? "past" : "live";
  $("#live").hidden = !past;
  document.body.dataset.mode = past ? "past" : "live";
}

function hear(seq) {
  latest = Math.max(latest, seq);
  const slider = $("#slider");
  slider.max = String(Math.max(latest, 1));
  if (viewing === null) slider.value = slider.max;
}

function refreshSoon(delay = 150) {
  clearTimeout(timer);
  timer = setTimeout(refresh, delay);
}

async function refresh() {
  const at = viewing;
  try {
    const doc = await fetchState(at);
    if (at !== viewing) return;  // the user moved on meanwhile
    render(doc);
    if (at === null && doc.Seq < latest) refreshSoon(300);  // the gateway has not applied it yet
  } catch (error) {
    $("#position").textContent = String(error);
    refreshSoon(2000);
  }
}

function follow() {
  const source = new EventSource("/shoal/ui/events");
  source.addEventListener("hello", (e) => { hear(Number(e.data)); refreshSoon(0); });
  source.onmessage = (e) => {
    const entry = JSON.parse(e.data);
    hear(entry.Seq);
    const ticker = $("#ticker");
    ticker.prepend(element("li", {}, `#${entry.Seq} ${entry.Type} by ${entry.Actor}`));
    while (ticker.children.length > 50) ticker.lastChild.remove();
    if (viewing === null) refreshSoon();
  };
}

$("#slider").addEventListener("input", () => {
  const seq = Number($("#slider").value);
  viewing = seq >= latest ? null : seq;
  setMode();
  refreshSoon();
});
$("#live").addEventListener("click", () => {
  viewing = null;
  $("#slider").value = $("#slider").max;
  setMode();
  refreshSoon(0);
});

setMode();
follow();
