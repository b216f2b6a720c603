// Opens the dashboard in headless Chromium with the demo token in the URL fragment, places
// orders through the API, and checks that the big number goes up by exactly that many
// without a reload; then that a phone-wide screen takes a long day's figures. Leaves
// screenshots for people to look at (SCREENSHOT_PATH, and the phone's beside it).
//
// Usage: node check.mjs BASE_URL TOKEN SCREENSHOT_PATH
import { chromium } from "playwright-core";

const [base, token, screenshot] = process.argv.slice(2);
if (!base || !token || !screenshot) {
  console.error("usage: node check.mjs BASE_URL TOKEN SCREENSHOT_PATH");
  process.exit(2);
}
const ORDERS = 25;
const fail = (message) => { console.error("dashboard check failed: " + message); process.exit(1); };
const count = (text) => Number(text.replace(/[^0-9]/g, ""));

const api = async (path, body) => {
  const response = await fetch(base + path, {
    method: "POST",
    headers: { authorization: "Bearer " + token, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) fail(`POST ${path} answered ${response.status}: ${await response.text()}`);
  return response.json();
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1366, height: 900 } });
  page.on("pageerror", (error) => fail("the page threw: " + error.message));
  await page.goto(`${base}/#token=${token}`);
  // The token leaves the address bar once it is stored.
  await page.waitForFunction(() => !location.hash.includes("token="), null, { timeout: 5000 });
  const bigNumber = () => page.textContent("#orders-today");
  await page.waitForFunction(() => /\d/.test(document.getElementById("orders-today").textContent),
    null, { timeout: 15000 }).catch(() => fail("the big number never showed a figure"));
  const before = count(await bigNumber());
  await page.evaluate(() => { window.__sameDocument = true; });

  await api("/v1/inventory/ci-mug/receive", { quantity: 1000 });
  for (let i = 0; i < ORDERS; i++) {
    await api("/v1/orders", {
      customer_id: `ci-${i}`, currency: "EUR",
      lines: [{ sku: "ci-mug", quantity: 1, unit_price: 1250 }],
    });
  }
  const expected = before + ORDERS;
  await page.waitForFunction((want) =>
    Number(document.getElementById("orders-today").textContent.replace(/[^0-9]/g, "")) === want,
    expected, { timeout: 15000 })
    .catch(async () => fail(`the big number shows ${await bigNumber()}, expected ${expected}`));
  if (!(await page.evaluate(() => window.__sameDocument === true))) fail("the page reloaded");
  const state = await page.getAttribute("#state", "data-state");
  if (state !== "live") fail(`the connection state is ${state}, not live`);
  const tenant = await page.textContent("#tenant");
  if (!tenant.includes("demo")) fail(`the heading names the tenant as "${tenant}", not demo`);
  // The chart's outline rises above its baseline (y = 300) where minutes had orders.
  const heights = await page.evaluate(() => [...document.querySelectorAll("#chart path")]
    .flatMap((p) => [...p.getAttribute("d").matchAll(/L[\d.]+,([\d.]+)/g)].map((m) => Number(m[1]))));
  if (!heights.some((y) => y < 300)) fail("the per-minute chart shows no orders");
  await page.screenshot({ path: screenshot, fullPage: true });
  // On a phone the page fits its width, even with a nine-digit day, a dozen currencies and a
  // gateway with a long id (figures drawn by the page's own render, as a stream would bring).
  await page.setViewportSize({ width: 360, height: 740 });
  // Drawn and measured in one task of the page, so that a live event cannot redraw between.
  const { overflow, shown } = await page.evaluate(() => {
    render({
      tenant: "t".repeat(64),
      orders_today: 123456789, orders_this_minute: 98765, orders_last_minute: 123456,
      peak_per_minute: 987654, peak_minute_ms: 0, open_reservations: 12345678, cancellations: 1234567,
      revenue: ["EUR", "USD", "GBP", "JPY", "KWD", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "HUF"]
        .map((currency) => ({ currency, revenue: 123456789012345, average_basket: 123456, minor_digits: 2 })),
      payments: [{ gateway: "g".repeat(64), success_rate: 0.987, authorized: 123456789, declined: 1234 }],
      payments_unavailable: 12,
      per_minute: [[0, 5], [720, 987]], at_ms: Date.now(),
    });
    const root = document.documentElement;
    return { overflow: root.scrollWidth - root.clientWidth, shown: document.getElementById("orders-today").textContent };
  });
  if (count(shown) !== 123456789) fail(`the test figures were not drawn: the big number shows ${shown}`);
  if (overflow > 0) fail(`on a 360 px wide screen the page is ${overflow} px too wide`);
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-phone.png"), fullPage: true });
  // A token no header can carry (a pasted "…") is dropped and asked for again, not retried
  // forever as if the network were down.
  const pasted = await browser.newPage();
  pasted.on("pageerror", (error) => fail("the page threw: " + error.message));
  await pasted.goto(`${base}/#token=orderly_%E2%80%A6abc`);
  await pasted.waitForFunction(() => getComputedStyle(document.getElementById("login")).display !== "none",
    null, { timeout: 5000 }).catch(() => fail("a token with a character no token has was not asked for again"));
  const stored = await pasted.evaluate(() => Object.keys(localStorage).length);
  if (stored !== 0) fail("the unusable token was kept");
  console.log(JSON.stringify({ before, after: expected, screenshot }));
} finally {
  await browser.close();
}
