#!/usr/bin/env node
// The dashboard under auth = jwt, in headless Chromium (playwright-core), for
// tests/integration/test_dashboard.py: prints what it saw as one JSON object.
//
// usage: node dashboard_auth_browser.js CONFIG_JSON
//   CONFIG_JSON: {"url", "tools", "chromium" (as dashboard_browser.js), "token": a
//                 token with ops:read, "bad_token": one todod refuses}
//
// Steps: open the page (the token form shows, no sample drawn); enter the token
// (the form hides, samples come, GET /stats carries it, sessionStorage holds it);
// a second tab of the same browser has no token (sessionStorage is per tab); the
// token then goes bad (GET /stats answers 401: the form shows again and the token
// is forgotten). The Python test makes the assertions.
"use strict";

const cfg = JSON.parse(process.argv[2] || "{}");
const TIMEOUT = 40000;

function load(name, from) {
  return require(require.resolve(name, { paths: [from] }));
}

async function state(page) {
  return page.evaluate(() => ({
    form_hidden: document.getElementById("token-form").hidden,
    samples: Number(document.body.getAttribute("data-samples")),
    stored: sessionStorage.getItem("todod.token"),
    note: document.getElementById("token-note").textContent,
  }));
}

async function main() {
  const pw = load("playwright-core", cfg.tools);
  const args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage"];
  const browser = await pw.chromium.launch({
    executablePath: cfg.chromium, headless: true, args, timeout: TIMEOUT,
  });
  const out = { stats_requests: [], console_errors: [], page_errors: [] };
  try {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    page.setDefaultTimeout(TIMEOUT);
    page.on("pageerror", (e) => out.page_errors.push(String(e)));
    page.on("request", (r) => {
      if (new URL(r.url()).pathname === "/stats")
        out.stats_requests.push({ authorization: r.headers()["authorization"] || null });
    });
    const resp = await page.goto(cfg.url + "/dashboard");
    out.page_status = resp.status();
    await page.waitForFunction(() => !document.getElementById("token-form").hidden);
    out.before = await state(page);
    await page.fill("#token", cfg.token);
    await page.click("#token-use");
    await page.waitForFunction(() => Number(document.body.getAttribute("data-samples")) >= 2);
    out.with_token = await state(page);
    const other = await ctx.newPage();
    await other.goto(cfg.url + "/dashboard");
    await other.waitForFunction(() => !document.getElementById("token-form").hidden);
    out.other_tab = await state(other);
    await other.close();
    // the token stops being good (as when it expires or its key is rotated)
    await page.evaluate((bad) => sessionStorage.setItem("todod.token", bad), cfg.bad_token);
    await page.waitForFunction(() => !document.getElementById("token-form").hidden);
    out.after_refusal = await state(page);
    await ctx.close();
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => {
  process.stderr.write("dashboard_auth_browser: " + (e && e.stack || e) + "\n");
  process.exit(1);
});
