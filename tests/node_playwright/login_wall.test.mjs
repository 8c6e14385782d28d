// Playwright for Node past Cloudflare Access's login wall, against a running fakeedge.
// Debian's Chromium (playwright-core downloads no browser); a host resolver rule sends the app's
// host name to 127.0.0.1, so no /etc/hosts edit. Run by tests/test_toolkit_node.py with:
//   APP_URL     the app through the edge, e.g. http://app.acme.test:PORT/
//   STATE_FILE  a storageState JSON from edge.storage_state(email) (or `fakeedge login`)
//   EMAIL       who is signed in, and who signs in on the SSO page
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";

const { APP_URL, STATE_FILE, EMAIL } = process.env;
const TIMEOUT = 10_000;
let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * 127.0.0.1"],
  });
});

after(async () => {
  await browser?.close();
});

test("a stored state opens the app signed in", async () => {
  const context = await browser.newContext({ storageState: STATE_FILE });
  const page = await context.newPage();
  await page.goto(APP_URL, { timeout: TIMEOUT });
  assert.equal(await page.locator("#who").innerText({ timeout: TIMEOUT }), EMAIL);
  await context.close();
});

test("without it, the SSO page signs the browser in", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(APP_URL, { timeout: TIMEOUT });
  assert.match(page.url(), /\/cdn-cgi\/access\/login\//);
  await page.fill("input[name=email]", EMAIL);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.waitForURL(APP_URL, { timeout: TIMEOUT });
  assert.equal(await page.locator("#who").innerText({ timeout: TIMEOUT }), EMAIL);
  await context.close();
});
