#!/usr/bin/env node
// Drive GET /dashboard of a running todod in headless Chromium (playwright-core,
// Debian's chromium) for tests/integration/test_dashboard.py, and print what it saw
// as one JSON object on stdout. The Python test makes the assertions.
//
// usage: node dashboard_browser.js CONFIG_JSON
//   CONFIG_JSON: {"url": base URL of todod, "tools": dir that npm installed
//                 playwright-core into, "chromium": browser executable,
//                 "outdir": where screenshots go,
//                 "runs": [{"viewport": [w, h], "mobile": bool, "name": "...",
//                           "traffic": bool, "perf": {"count", "batch", "workers", "rate"}}]}
//
// For each run: a new browser context with that viewport opens the page and
// records console errors, page errors, failed requests, answers >= 400 and the
// body of every GET /stats the page received (in order: the page's sample n is
// the n-th). With "traffic": it sends known requests between two samples, then
// reads the page's figures right after a sample and fetches /stats itself at
// once. With "perf": it fills in the form, starts the test, waits for the report
// and records the request, the answer and what the page shows. Screenshots are
// taken along the way.
"use strict";

const fs = require("fs");
const path = require("path");
const crypto = require("crypto");

const cfg = JSON.parse(process.argv[2] || "{}");
const TIMEOUT = 40000;

function load(name, from) {
  return require(require.resolve(name, { paths: [from] }));
}

function log(...a) {
  process.stderr.write("[dashboard_browser] " + a.join(" ") + "\n");
}

async function httpGetJson(p) {
  const r = await fetch(cfg.url + p, { cache: "no-store" });
  if (r.status !== 200) throw new Error("GET " + p + ": " + r.status);
  return r.json();
}

// Known traffic: 404s and 400s on /todos/{id}, 201s on /todos.
async function sendTraffic() {
  const sent = { not_found: 0, bad_id: 0, created: 0 };
  for (let i = 0; i < 30; i++) {
    const r = await fetch(cfg.url + "/todos/" + crypto.randomUUID());
    await r.arrayBuffer();
    if (r.status !== 404) throw new Error("GET /todos/{random}: " + r.status);
    sent.not_found++;
  }
  for (let i = 0; i < 6; i++) {
    const r = await fetch(cfg.url + "/todos/not-a-uuid-" + i);
    await r.arrayBuffer();
    if (r.status !== 400) throw new Error("GET /todos/not-a-uuid: " + r.status);
    sent.bad_id++;
  }
  for (let i = 0; i < 12; i++) {
    const r = await fetch(cfg.url + "/todos", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ title: "dashboard test " + i }),
    });
    await r.arrayBuffer();
    if (r.status !== 201) throw new Error("POST /todos: " + r.status);
    sent.created++;
  }
  return sent;
}

// What the page shows, read in one go (the page's script cannot run in between).
function readDom() {
  const txt = (id) => { const e = document.getElementById(id); return e ? e.textContent.trim() : null; };
  const rows = (id) => Array.from(document.querySelectorAll("#" + id + " tbody tr")).map((tr) =>
    ({ key: tr.getAttribute("data-route") || tr.getAttribute("data-pid"),
       cells: Array.from(tr.cells).map((td) => td.textContent.trim()) }));
  const codes = {};
  document.querySelectorAll("#codes [data-code]").forEach((e) => { codes[e.getAttribute("data-code")] = e.querySelector("b").textContent; });
  const legend = (id) => Array.from(document.querySelectorAll("#" + id + " span")).map((s) => s.textContent.trim());
  const ids = ["t-rps", "t-requests", "t-p50", "t-p99", "t-4xx", "t-5xx", "t-4xx-total", "t-5xx-total",
    "t-workers", "t-restarts", "t-db-up", "t-db-of", "t-db-errors", "t-db-reconnects", "t-perf-running",
    "t-perf-done", "t-perf-todos", "conn-text", "pt-status", "pt-success", "pt-errors", "pt-elapsed",
    "pt-rate-all", "pt-lat", "pt-r-success_count", "pt-r-error_count", "pt-r-duration_ms",
    "pt-r-messages_per_second", "pt-r-batches", "pt-r-batch_latency_ms", "pt-r-worker_pid", "pt-r-workers",
    "build"];
  const text = {};
  ids.forEach((id) => { text[id] = txt(id); });
  return {
    samples: +document.body.getAttribute("data-samples"),
    window_ms: +document.getElementById("tiles").getAttribute("data-window-ms"),
    text,
    routes: rows("routes"),
    workers: rows("workers"),
    codes,
    legends: { rps: legend("lg-rps"), lat: legend("lg-lat"), err: legend("lg-err"), perf: legend("lg-perf"), pt: legend("lg-pt") },
    pt_points: +document.getElementById("pt-chart").getAttribute("data-points"),
    pt_state: document.getElementById("pt-report").getAttribute("data-state"),
    pt_bar: document.getElementById("pt-bar").style.width,
    // page layout: nothing wider than the viewport (no sideways scrolling of the page)
    scroll_width: document.documentElement.scrollWidth,
    client_width: document.documentElement.clientWidth,
    canvases: Array.from(document.querySelectorAll("canvas")).map((c) => ({ id: c.id, w: c.width, h: c.height })),
  };
}

async function waitSamples(page, n) {
  await page.waitForFunction((k) => +document.body.getAttribute("data-samples") >= k, n, { timeout: TIMEOUT });
  return page.evaluate(() => +document.body.getAttribute("data-samples"));
}

async function oneRun(browser, run) {
  const out = { name: run.name, console_errors: [], page_errors: [], failed_requests: [], bad_responses: [],
    stats_bodies: [], screenshots: [], requests: [] };
  // where console errors and answers >= 400 go: `out`, or out.refused during that step
  let sink = out;
  const ctx = await browser.newContext({
    viewport: { width: run.viewport[0], height: run.viewport[1] },
    deviceScaleFactor: run.mobile ? 2 : 1, isMobile: !!run.mobile, hasTouch: !!run.mobile,
    locale: "en-US",
  });
  const page = await ctx.newPage();
  let watching = true;
  const statsPromises = [];
  page.on("console", (m) => { if (m.type() === "error") sink.console_errors.push(m.text()); });
  page.on("pageerror", (e) => out.page_errors.push(String(e && e.stack || e)));
  page.on("requestfailed", (r) => {
    if (watching) out.failed_requests.push(r.method() + " " + r.url() + ": " + (r.failure() || {}).errorText);
  });
  let perfReq = null, perfResp = null;
  page.on("request", (r) => {
    const key = r.method() + " " + r.url();
    if (!out.requests.includes(key)) out.requests.push(key);
    if (r.method() === "POST" && new URL(r.url()).pathname === "/todos/performance-test") {
      perfReq = { body: r.postData(), headers: r.headers() };
    }
  });
  page.on("response", (r) => {
    const u = new URL(r.url());
    if (r.status() >= 400) sink.bad_responses.push(r.status() + " " + r.request().method() + " " + r.url());
    if (u.pathname === "/stats" && r.status() === 200) statsPromises.push(r.json().catch((e) => ({ error: String(e) })));
    if (u.pathname === "/todos/performance-test") perfResp = r;
  });
  const shot = async (file, fullPage) => {
    const p = path.join(cfg.outdir, file);
    await page.screenshot({ path: p, fullPage: !!fullPage });
    out.screenshots.push(p);
  };

  const t0 = Date.now();
  const resp = await page.goto(cfg.url + "/dashboard", { waitUntil: "load", timeout: TIMEOUT });
  out.dashboard_status = resp.status();
  out.dashboard_type = resp.headers()["content-type"];
  out.dashboard_headers = resp.headers();
  out.dashboard_body = await resp.text();
  await waitSamples(page, 2);

  if (run.traffic) {
    // the traffic falls between two samples of the page
    const k = await page.evaluate(() => +document.body.getAttribute("data-samples"));
    await waitSamples(page, k + 1);
    out.traffic = await sendTraffic();
    const k2 = await page.evaluate(() => +document.body.getAttribute("data-samples"));
    await waitSamples(page, k2 + 2);
    // right after the page's next sample: its figures, then /stats at once
    const k3 = await page.evaluate(() => +document.body.getAttribute("data-samples"));
    await waitSamples(page, k3 + 1);
    out.dom = await page.evaluate(readDom);
    out.fetched = await httpGetJson("/stats");
    out.samples_after_fetch = await page.evaluate(() => +document.body.getAttribute("data-samples"));
    await shot(run.name + "-live.png", false);
  }

  if (run.perf) {
    const p = run.perf;
    await page.fill("#pt-count", String(p.count));
    await page.fill("#pt-batch", String(p.batch));
    await page.fill("#pt-workers", p.workers === undefined || p.workers === null ? "" : String(p.workers));
    await page.fill("#pt-rate", p.rate === undefined || p.rate === null ? "" : String(p.rate));
    const started = Date.now();
    await page.click("#pt-start");
    // a picture while it runs, when it runs long enough to draw progress
    const mid = await page.waitForFunction(() => {
      const s = document.getElementById("pt-report").getAttribute("data-state");
      return s === "done" || s === "error" ? s :
        +document.getElementById("pt-chart").getAttribute("data-points") >= 2 ? "running" : false;
    }, null, { timeout: TIMEOUT });
    if ((await mid.jsonValue()) === "running") await shot(run.name + "-perf-running.png", false);
    await page.waitForFunction(() => ["done", "error"].includes(document.getElementById("pt-report").getAttribute("data-state")),
      null, { timeout: TIMEOUT });
    out.perf_ms = Date.now() - started;
    out.perf_request = perfReq;
    if (perfResp) {
      out.perf_response = { status: perfResp.status(), content_type: perfResp.headers()["content-type"],
        body: await perfResp.text().catch((e) => "(body not available: " + e + ")") };
    }
    // one more sample, so the tiles include the finished test
    const k = await page.evaluate(() => +document.body.getAttribute("data-samples"));
    await waitSamples(page, k + 1);
    out.perf_dom = await page.evaluate(readDom);
    out.perf_fetched = await httpGetJson("/stats");
    await page.evaluate(() => window.scrollTo(0, 0));
    if (run.mobile) {
      await shot(run.name + ".png", false);
      await page.evaluate(() => document.getElementById("perf").scrollIntoView());
      await shot(run.name + "-perf.png", false);
      await page.evaluate(() => window.scrollTo(0, 0));
    } else {
      await shot(run.name + ".png", false);
    }
    await shot(run.name + "-full.png", true);
  }

  if (run.refuse) {
    // a test the server refuses: the page says why
    out.refused = { console_errors: [], bad_responses: [] };
    sink = out.refused;
    perfReq = null;
    await page.fill("#pt-count", String(run.refuse.count));
    await page.fill("#pt-batch", String(run.refuse.batch));
    await page.fill("#pt-workers", "");
    await page.fill("#pt-rate", "");
    await page.click("#pt-start");
    await page.waitForFunction(() => ["done", "error"].includes(document.getElementById("pt-report").getAttribute("data-state")),
      null, { timeout: TIMEOUT });
    out.refused.request = perfReq;
    out.refused.dom = await page.evaluate(readDom);
    // the refusal reaches the console (Chromium's own "Failed to load resource"),
    // maybe later: this step is the run's last, what comes now belongs to it
  }

  watching = false;
  // the page's policy is in force: the browser refuses a connection elsewhere
  // (its console error, and the refused request, belong to this probe)
  const requested = out.requests.length;
  out.csp_probe = { console_errors: [], bad_responses: [] };
  sink = out.csp_probe;
  out.csp_probe.violated = await page.evaluate(async (other) => {
    let violated = null;
    document.addEventListener("securitypolicyviolation", (e) => { violated = e.effectiveDirective; });
    try { await fetch(other, { mode: "no-cors", cache: "no-store" }); } catch (e) { /* refused */ }
    await new Promise((r) => setTimeout(r, 200));
    return violated;
  }, cfg.url.replace("127.0.0.1", "127.0.0.2") + "/stats");
  // ... and any inline code but the page's own: an injected script element, style
  // element and style attribute are refused, and none of them takes effect
  out.csp_probe.inline = await page.evaluate(async () => {
    const seen = [];
    const on = (e) => seen.push(e.effectiveDirective);
    document.addEventListener("securitypolicyviolation", on);
    window.__injected = false;
    const s = document.createElement("script");
    s.textContent = "window.__injected = true;";
    document.body.appendChild(s);
    const st = document.createElement("style");
    st.textContent = "body { outline: 7px dotted rgb(255, 0, 0); }";
    document.head.appendChild(st);
    const d = document.createElement("div");
    d.setAttribute("style", "width: 123px");
    document.body.appendChild(d);
    await new Promise((r) => setTimeout(r, 200));
    const result = {
      violated: seen.sort(), ran: window.__injected,
      outline: getComputedStyle(document.body).outlineStyle, width: getComputedStyle(d).width,
    };
    document.removeEventListener("securitypolicyviolation", on);
    s.remove(); st.remove(); d.remove();
    return result;
  });
  out.csp_probe.requests = out.requests.splice(requested);
  out.stats_bodies = await Promise.all(statsPromises);
  out.elapsed_ms = Date.now() - t0;
  await ctx.close();
  return out;
}

async function main() {
  const pw = load("playwright-core", cfg.tools);
  // launch() starts the browser with a new empty profile (--user-data-dir) of its
  // own in the temp directory (the test points TMPDIR at its own) and removes it
  // at close; it refuses a --user-data-dir argument.
  const args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage"];
  const browser = await pw.chromium.launch({
    executablePath: cfg.chromium, headless: true, args, timeout: TIMEOUT,
  });
  const result = { runs: [] };
  try {
    for (const run of cfg.runs) {
      log("run", run.name);
      result.runs.push(await oneRun(browser, run));
    }
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(result) + "\n");
}

main().catch((e) => {
  process.stderr.write("dashboard_browser: " + (e && e.stack || e) + "\n");
  process.exit(1);
});
