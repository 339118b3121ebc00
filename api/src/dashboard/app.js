// The Longhaul dashboard: everything through the /v1 API with the key the
// user gives (kept in this tab's session storage only). An operator key sees
// queues, workers and tenants; a tenant key its jobs, schedules and usage.
"use strict";

const KEY_ITEM = "longhaulApiKey";
const REFRESH_MS = 5000;
let key = sessionStorage.getItem(KEY_ITEM) || "";
let refreshTimer = null;
let selectedJob = null;
let following = null; // AbortController of the selected job's event stream
let jobsCursor = null;

const $ = (selector) => document.querySelector(selector);

function showError(error) {
  const box = $("#error");
  if (!error) {
    box.hidden = true;
    return;
  }
  box.textContent = String(error.message || error);
  box.hidden = false;
}

async function api(path, options = {}) {
  const headers = { Authorization: "Bearer " + key };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = (body && body.error) || {};
    const failure = new Error(`${response.status} ${error.code || ""}: ${error.message || text}`);
    failure.status = response.status;
    throw failure;
  }
  return body;
}

function cell(row, value) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "" : String(value);
  row.appendChild(td);
  return td;
}

function fillTable(selector, items, columns, decorate) {
  const body = $(selector + " tbody");
  body.replaceChildren();
  for (const item of items) {
    const row = document.createElement("tr");
    for (const column of columns) cell(row, column(item));
    if (decorate) decorate(row, item);
    body.appendChild(row);
  }
}

function when(text) {
  return text ? new Date(text).toLocaleString() : "";
}

function progressText(progress) {
  if (!progress) return "";
  const of = progress.total !== undefined && progress.total !== null ? `/${progress.total}` : "";
  const unit = progress.unit ? ` ${progress.unit}` : "";
  return `${progress.current}${of}${unit}`;
}

function statusBadge(element, status) {
  element.textContent = status;
  element.className = `status status-${status}`;
}

// ---- operator ------------------------------------------------------------

async function refreshOperator() {
  const [queues, workers, tenants] = await Promise.all([
    api("/v1/queues"),
    api("/v1/workers"),
    api("/v1/tenants?limit=100"),
  ]);
  $("#queues-at").textContent = "as of " + when(queues.at);
  fillTable("#queues", queues.data, [
    (q) => q.queue,
    (q) => q.kind,
    (q) => q.due,
    (q) => q.scheduled,
    (q) => q.running,
    (q) => (q.due ? `${q.oldestAgeSeconds.toFixed(1)} s` : "—"),
  ]);
  showThroughput(queues.lastHour, new Date(queues.at));
  fillTable("#workers", workers.data, [
    (w) => w.workerId,
    (w) => w.host,
    (w) => w.status,
    (w) => w.queues.join(", "),
    (w) => `${w.runningJobs} / ${w.concurrency}`,
    (w) => when(w.lastHeartbeatAt),
  ]);
  const usage = await Promise.all(
    tenants.data.map((t) => api(`/v1/tenants/${encodeURIComponent(t.id)}/usage`).catch(() => null)),
  );
  const totals = new Map(tenants.data.map((t, i) => [t.id, usage[i] ? usage[i].total : ""]));
  fillTable("#tenants", tenants.data, [
    (t) => t.id,
    (t) => t.name,
    (t) => t.plan,
    (t) => t.status,
    (t) =>
      Object.entries(t.quotas || {})
        .filter(([, v]) => v !== null && v !== undefined)
        .map(([k, v]) => `${k} ${v}`)
        .join(", "),
    (t) => totals.get(t.id),
  ]);
}

// One bar per minute of the last hour (failed attempts stacked in red).
function showThroughput(minutes, now) {
  const byMinute = new Map(minutes.map((m) => [new Date(m.minute).getTime(), m]));
  const end = Math.floor(now.getTime() / 60000) * 60000;
  const peak = Math.max(1, ...minutes.map((m) => m.succeeded + m.failed));
  const chart = $("#throughput");
  chart.replaceChildren();
  let total = 0;
  for (let at = end - 59 * 60000; at <= end; at += 60000) {
    const m = byMinute.get(at) || { succeeded: 0, failed: 0 };
    total += m.succeeded + m.failed;
    const column = document.createElement("div");
    column.style.display = "flex";
    column.style.flexDirection = "column-reverse";
    column.style.background = "none";
    column.title = `${new Date(at).toLocaleTimeString()}: ${m.succeeded} succeeded, ${m.failed} failed`;
    for (const [count, failed] of [[m.succeeded, false], [m.failed, true]]) {
      if (!count) continue;
      const bar = document.createElement("div");
      bar.style.height = `${Math.max(1, Math.round((56 * count) / peak))}px`;
      if (failed) bar.className = "failed";
      column.appendChild(bar);
    }
    chart.appendChild(column);
  }
  $("#throughput-total").textContent = `${total} in all`;
}

// ---- tenant --------------------------------------------------------------

function jobsQuery(cursor) {
  const params = new URLSearchParams({ limit: "50" });
  const state = $("#state-filter").value;
  const kind = $("#kind-filter").value.trim();
  if (state) params.set("state", state);
  if (kind) params.set("kind", kind);
  if (cursor) params.set("cursor", cursor);
  return "/v1/jobs?" + params.toString();
}

async function refreshJobs() {
  const page = await api(jobsQuery(null));
  jobsCursor = page.nextCursor;
  fillTable(
    "#jobs",
    page.data,
    [(j) => j.id, (j) => j.kind, (j) => j.queue, (j) => j.status, (j) => progressText(j.progress), (j) => when(j.createdAt)],
    (row, job) => {
      row.dataset.jobId = job.id;
      row.dataset.status = job.status;
      if (job.id === selectedJob) row.classList.add("selected");
      row.addEventListener("click", () => selectJob(job.id));
    },
  );
  $("#more-jobs").hidden = !jobsCursor;
}

async function moreJobs() {
  if (!jobsCursor) return;
  const page = await api(jobsQuery(jobsCursor));
  jobsCursor = page.nextCursor;
  const body = $("#jobs tbody");
  for (const job of page.data) {
    const row = document.createElement("tr");
    for (const value of [job.id, job.kind, job.queue, job.status, progressText(job.progress), when(job.createdAt)]) cell(row, value);
    row.dataset.jobId = job.id;
    row.addEventListener("click", () => selectJob(job.id));
    body.appendChild(row);
  }
  $("#more-jobs").hidden = !jobsCursor;
}

async function refreshTenantSide() {
  const [schedules, usage] = await Promise.all([api("/v1/schedules?limit=100"), api("/v1/usage")]);
  fillTable("#schedules", schedules.data, [
    (s) => s.name,
    (s) => `${s.cron} (${s.timeZone})`,
    (s) => s.kind,
    (s) => when(s.nextFireAt),
    (s) => (s.paused ? "yes" : "no"),
  ]);
  fillTable("#usage", usage.data, [(u) => u.kind, (u) => u.operations]);
}

function showJob(job) {
  $("#job-id").textContent = job.id;
  statusBadge($("#job-status"), job.status);
  showProgress(job.progress);
  const finished = ["succeeded", "failed", "cancelled"].includes(job.status);
  $("#cancel-job").disabled = finished;
  $("#retry-job").disabled = !(job.status === "failed" || job.status === "cancelled");
  $("#download-result").hidden = job.status !== "succeeded";
  const error = $("#job-error");
  error.hidden = !job.error;
  error.textContent = job.error ? `${job.error.code}: ${job.error.message}` : "";
  if (job.attempts) {
    fillTable("#job-attempts", job.attempts, [
      (a) => a.attempt,
      (a) => a.workerId,
      (a) => a.outcome,
      (a) => when(a.startedAt),
      (a) => when(a.finishedAt),
      (a) => (a.error ? `${a.error.code}: ${a.error.message}` : ""),
    ]);
  }
}

function showProgress(progress) {
  const bar = $("#job-progress");
  bar.hidden = !(progress && progress.total);
  if (!bar.hidden) {
    bar.max = progress.total;
    bar.value = progress.current;
  }
  $("#job-progress-text").textContent = progress ? `${progressText(progress)} ${progress.message || ""}` : "";
}

async function selectJob(id) {
  selectedJob = id;
  for (const row of document.querySelectorAll("#jobs tbody tr")) {
    row.classList.toggle("selected", row.dataset.jobId === id);
  }
  $("#job-detail").hidden = false;
  $("#job-events").replaceChildren();
  showJob(await api(`/v1/jobs/${encodeURIComponent(id)}`));
  follow(id);
}

// Follows a job's Server-Sent Events (fetch, so the key goes in a header),
// from its first log entry on.
async function follow(id) {
  if (following) following.abort();
  const controller = new AbortController();
  following = controller;
  try {
    const response = await fetch(`/v1/jobs/${encodeURIComponent(id)}/events`, {
      headers: { Authorization: "Bearer " + key, Accept: "text/event-stream", "Last-Event-ID": "0" },
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(`event stream: ${response.status}`);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        onServerEvent(id, block);
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") showError(error);
  }
}

function onServerEvent(id, block) {
  if (id !== selectedJob) return;
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const at = line.indexOf(":");
    const field = at < 0 ? line : line.slice(0, at);
    const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
    if (field === "event") name = value;
    if (field === "data") data.push(value);
  }
  if (!data.length) return;
  const payload = JSON.parse(data.join("\n"));
  if (name === "state") {
    statusBadge($("#job-status"), payload.status);
    showProgress(payload.progress);
    const finished = ["succeeded", "failed", "cancelled"].includes(payload.status);
    $("#cancel-job").disabled = finished;
    $("#retry-job").disabled = !(payload.status === "failed" || payload.status === "cancelled");
    $("#download-result").hidden = payload.status !== "succeeded";
    return;
  }
  if (name === "progress" && payload.data) showProgress(payload.data);
  const item = document.createElement("li");
  item.textContent = `${when(payload.at)} ${name}${payload.attempt ? " #" + payload.attempt : ""} ${
    payload.data ? JSON.stringify(payload.data) : ""
  }`;
  $("#job-events").appendChild(item);
}

async function jobAction(action) {
  if (!selectedJob) return;
  try {
    const job = await api(`/v1/jobs/${encodeURIComponent(selectedJob)}/${action}`, { method: "POST" });
    showJob(job);
    if (action === "retry") follow(selectedJob);
    await refreshJobs();
  } catch (error) {
    showError(error);
  }
}

async function downloadResult() {
  try {
    const response = await fetch(`/v1/jobs/${encodeURIComponent(selectedJob)}/result`, {
      headers: { Authorization: "Bearer " + key },
    });
    if (!response.ok) throw new Error(`result: ${response.status}`);
    const blob = await response.blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `${selectedJob}-result`;
    link.click();
    URL.revokeObjectURL(link.href);
  } catch (error) {
    showError(error);
  }
}

// ---- start ----------------------------------------------------------------

async function refresh(role) {
  try {
    if (role === "operator") await refreshOperator();
    else await Promise.all([refreshJobs(), refreshTenantSide()]);
    showError(null);
  } catch (error) {
    showError(error);
  }
}

async function start() {
  clearInterval(refreshTimer);
  $("#operator").hidden = true;
  $("#tenant").hidden = true;
  $("#who").textContent = "";
  if (!key) return;
  let role;
  try {
    await api("/v1/workers");
    role = "operator";
  } catch (error) {
    if (error.status === 403) role = "tenant";
    else {
      showError(error);
      return;
    }
  }
  $("#who").textContent = role === "operator" ? "operator key" : "tenant key";
  $("#" + role).hidden = false;
  await refresh(role);
  refreshTimer = setInterval(() => refresh(role), REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  $("#key").value = key;
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    key = $("#key").value.trim();
    sessionStorage.setItem(KEY_ITEM, key);
    start();
  });
  $("#forget-key").addEventListener("click", () => {
    key = "";
    sessionStorage.removeItem(KEY_ITEM);
    $("#key").value = "";
    start();
  });
  $("#job-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    refresh("tenant");
  });
  $("#more-jobs").addEventListener("click", () => moreJobs().catch(showError));
  $("#cancel-job").addEventListener("click", () => jobAction("cancel"));
  $("#retry-job").addEventListener("click", () => jobAction("retry"));
  $("#download-result").addEventListener("click", downloadResult);
  start();
});
