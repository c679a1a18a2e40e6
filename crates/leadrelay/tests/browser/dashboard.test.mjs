// End-to-end dashboard test in real headless Chromium (Debian's `chromium`,
// driven by playwright-core; no browser is downloaded).
//
// It starts the real leadrelay binary on a free port with a webhook
// destination pointing at a receiver run here (which can be told to fail),
// then, as a person would: signs in with an API key, submits a lead through
// the public form endpoint from an HTML page, sees it on the overview and
// in the list, opens its timeline, watches the failing destination turn the
// delivery into a dead letter, lets the destination recover, replays the
// dead letter from the dashboard and sees it delivered; then groups failures
// into an issue and retries the group, replays by filter after seeing the
// count, filters leads by delivery state, opens a contact, the review queue
// and erases a person; pauses a destination, retries its waiting
// deliveries now and cancels one with a reason (count first, then progress);
// opens a destination's latency and error charts, switches their range and
// checks them at 375 px; rates the lead, opens the KPIs and every report
// (chart, table, filters, CSV, 375 px); enrolls webinar leads in a lemlist
// campaign (the `leadrelay fake lemlist` vendor) under an add limit of one a
// day and sees the person's sequence membership on their contact page and
// the second person in the overflow queue; and checks what a viewer sees on
// every page.
// Screenshots of each page (desktop and phone width, admin and viewer-*) go
// to $ARTIFACTS (default target/test-artifacts/browser).
//
// Env: LEADRELAY_BIN (the binary), ARTIFACTS, CHROMIUM (default /usr/bin/chromium).

import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { chromium } from 'playwright-core';

const here = path.dirname(new URL(import.meta.url).pathname);
const root = path.resolve(here, '../../../..');
const BIN = process.env.LEADRELAY_BIN || path.join(root, 'target/debug/leadrelay');
const ARTIFACTS = process.env.ARTIFACTS || path.join(root, 'target/test-artifacts/browser');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const EMAIL = 'dana.lopez@example.com';

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

async function eventually(what, fn, timeoutMs = 20000) {
  const start = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The webhook destination: answers 500 while `failing`, else 200. */
function startReceiver(port, leadrelayPort) {
  const state = { failing: false, delivered: [], refused: 0 };
  const form = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Contact us</title></head>
<body><h1>Contact us</h1>
<form method="post" action="http://127.0.0.1:${leadrelayPort}/v1/forms/contact?utm_source=e2e">
<label>Email <input type="email" name="email" required></label>
<label>First name <input name="first_name"></label>
<label>Last name <input name="last_name"></label>
<label>Company <input name="company"></label>
<label>Phone <input type="tel" name="phone"></label>
<label><input type="checkbox" name="consent" value="on"> I agree that my details are passed to sales.</label>
<button>Send</button></form></body></html>`;
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/form.html') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(form);
      return;
    }
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      if (state.failing) {
        state.refused += 1;
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('CRM is down for maintenance');
      } else {
        state.delivered.push(body);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"ok":true}');
      }
    });
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve({ server, state })));
}

test('dashboard: sign in, see a lead, replay its dead letter, see it delivered', async (t) => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'leadrelay-e2e-'));
  const port = await freePort();
  const rport = await freePort();
  const { server: receiver, state } = await startReceiver(rport, port);
  // The sequence tool: leadrelay's own fake lemlist.
  const lport = await freePort();
  const lemlist = spawn(BIN, ['fake', 'lemlist', '--listen', `127.0.0.1:${lport}`], { stdio: 'ignore' });
  const config = path.join(dir, 'leadrelay.toml');
  fs.writeFileSync(
    config,
    `[server]
per_ip_limit = "off"

[forms.contact]
title = "Contact"
[forms.contact.fields.email]
type = "email"
required = true
[forms.contact.fields.first_name]
type = "text"
[forms.contact.fields.last_name]
type = "text"
[forms.contact.fields.company]
type = "text"
[forms.contact.fields.phone]
type = "phone"
default_region = "US"
[forms.contact.consent.crm]
field = "consent"
version = "v1"

[delivery]
poll_interval = "100ms"
[delivery.retry]
base = "50ms"
cap = "200ms"
max_attempts = 2

[destinations.crm]
connector = "webhook"
url = "http://127.0.0.1:${rport}/hook"
allow_private_networks = true
purposes = ["crm"]
timeout = "2s"

[destinations.backup]
connector = "file"
path = "${dir}/backup"
legal_basis = "legitimate_interest"

[[routes]]
name = "all"
forms = ["contact"]
destinations = ["crm", "backup"]

[forms.webinar]
title = "Webinar"
[forms.webinar.fields.email]
type = "email"
required = true
[forms.webinar.fields.first_name]
type = "text"
[forms.webinar.consent.crm]
field = "consent"
version = "v1"

[destinations.onboarding]
connector = "lemlist"
campaign_id = "cam_fakeOnboarding01"
base_url = "http://127.0.0.1:${lport}"
allow_private_networks = true
purposes = ["crm"]
[destinations.onboarding.enrollment]
add_limit = "1/1d"

[[routes]]
name = "webinar"
forms = ["webinar"]
destinations = ["onboarding"]
`,
  );
  const storage = `sqlite://${dir}/leadrelay.db`;
  const env = {
    ...process.env, LEADRELAY_CONFIG: config, DATABASE_URL: storage, RUST_LOG: 'warn',
    LEMLIST_API_KEY: 'fake-lemlist-key-0001',
  };
  const key = execFileSync(BIN, ['keys', 'create', '--name', 'e2e-admin', '--role', 'admin'], {
    env,
    encoding: 'utf8',
  }).trim();
  assert.match(key, /^lr_/);

  const log = fs.openSync(path.join(ARTIFACTS, 'leadrelay.log'), 'w');
  const proc = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`], { env, stdio: ['ignore', log, log] });
  const base = `http://127.0.0.1:${port}`;
  let browser;
  t.after(async () => {
    if (browser) await browser.close();
    proc.kill('SIGTERM');
    lemlist.kill('SIGTERM');
    receiver.close();
  });
  await eventually('the fake lemlist is listening', async () => {
    try {
      return (await fetch(`http://127.0.0.1:${lport}/api/team`)).status === 401;
    } catch {
      return false;
    }
  });
  await eventually('leadrelay is ready', async () => {
    try {
      return (await fetch(`${base}/readyz`)).ok;
    } catch {
      return false;
    }
  });

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
      '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync',
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const shot = (name) => page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });

  await t.test('every dashboard page needs a session', async () => {
    await page.goto(`${base}/ui/leads`);
    assert.match(page.url(), /\/ui\/login\?next=/);
  });

  await t.test('sign in with an API key', async () => {
    await page.goto(`${base}/ui/login`);
    await shot('01-sign-in');
    // Every visible field has a label (accessibility).
    assert.equal(await page.getByLabel('API key').count(), 1);
    await page.getByLabel('API key').fill('lr_wrong');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('That key is not valid').waitFor();
    await page.getByLabel('API key').fill(key);
    await page.keyboard.press('Enter');
    await page.waitForURL(`${base}/ui/`);
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    const cookies = await context.cookies(`${base}/ui/`);
    const session = cookies.find((c) => c.name === 'lr_session');
    assert.ok(session, 'session cookie set');
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Strict');
    assert.ok(!(await page.content()).includes(key), 'the key never appears in a page');
  });

  let eventId;
  await t.test('submit a lead through the public form endpoint while the CRM fails', async () => {
    state.failing = true;
    const visitor = await context.newPage();
    await visitor.goto(`http://127.0.0.1:${rport}/form.html`);
    await visitor.getByLabel('Email').fill(EMAIL);
    await visitor.getByLabel('First name').fill('Dana');
    await visitor.getByLabel('Last name').fill('Lopez');
    await visitor.getByLabel('Company').fill('Acme Rockets');
    await visitor.getByLabel('Phone').fill('+1 415 555 2671');
    await visitor.getByLabel('I agree').check();
    await visitor.getByRole('button', { name: 'Send' }).click();
    await visitor.getByRole('heading', { name: 'Thank you' }).waitFor();
    await visitor.screenshot({ path: path.join(ARTIFACTS, '02-form-thanks.png') });
    await visitor.close();
  });

  await t.test('see it on the overview', async () => {
    await page.goto(`${base}/ui/`);
    assert.equal((await page.locator('#leads-today').textContent()).trim(), '1');
    await page.getByRole('link', { name: 'form:contact' }).waitFor();
    assert.equal(await page.locator('svg.chart').count(), 2, 'two charts');
    await shot('03-overview');
  });

  await t.test('see it in the list and open its timeline', async () => {
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Leads' }).click();
    await page.getByLabel('Search').fill('dana.lopez');
    await page.getByRole('button', { name: 'Filter' }).click();
    const row = page.locator('#leads tbody tr', { hasText: EMAIL });
    await row.waitFor();
    assert.match(await row.textContent(), /Acme Rockets/);
    await shot('04-leads');
    await row.getByRole('link').click();
    await page.waitForURL(/\/ui\/leads\/[0-9a-f-]{36}$/);
    eventId = page.url().split('/').pop();
    await page.getByRole('heading', { name: 'Dana Lopez' }).waitFor();
    await page.getByRole('heading', { name: /^To crm/ }).waitFor();
  });

  await t.test('the failing destination turns the delivery into a dead letter', async () => {
    await eventually('the crm delivery is dead', async () => {
      await page.goto(`${base}/ui/leads/${eventId}`);
      return (await page.locator('.state-dead').count()) === 1;
    });
    await page.getByText('CRM is down for maintenance').first().waitFor();
    assert.ok(state.refused >= 2, `the receiver refused ${state.refused} attempts`);
    await shot('05-timeline-dead');
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Dead letters' }).click();
    await page.locator('#dead-letters tbody tr', { hasText: 'crm' }).waitFor();
    await shot('06-dead-letters');
  });

  await t.test('replay the dead letter after the destination recovers, see it delivered', async () => {
    state.failing = false;
    const row = page.locator('#dead-letters tbody tr', { hasText: 'crm' });
    await row.getByRole('button', { name: /^Replay/ }).click();
    await page.getByText('Replayed: a new delivery is on its way.').waitFor();
    await eventually('the replay is delivered', async () => {
      await page.goto(`${base}/ui/leads/${eventId}`);
      return (await page.locator('.delivery.state-delivered', { hasText: 'To crm' }).count()) === 1;
    });
    await page.getByText('Replays dead letter').waitFor();
    assert.equal(state.delivered.filter((b) => b.includes(EMAIL)).length, 1, 'the CRM received the lead once');
    await shot('07-timeline-delivered');
    await page.goto(`${base}/ui/dead-letters`);
    await page.getByText('No dead letters').waitFor();
  });

  await t.test('destinations page and phone width', async () => {
    await page.goto(`${base}/ui/destinations`);
    await page.getByRole('row', { name: /crm/ }).waitFor();
    await shot('08-destinations');
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${base}/ui/`);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `no horizontal page scroll at phone width (overflow ${overflow}px)`);
    await shot('09-overview-phone');
    await page.goto(`${base}/ui/leads/${eventId}`);
    await shot('10-timeline-phone');
  });

  // At 375 px: no horizontal page scroll, every chart fits and its axis
  // and legend text stays readable when the chart is scaled down.
  const checkPhone = async (pages) => {
    await page.setViewportSize({ width: 375, height: 812 });
    for (const [url, name] of pages) {
      await page.goto(url);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 1, `${name}: no horizontal page scroll at 375 px (overflow ${overflow}px)`);
      const charts = page.locator('svg.chart');
      for (let i = 0; i < (await charts.count()); i++) {
        const box = await charts.nth(i).boundingBox();
        assert.ok(box.width <= 375, `${name}: chart ${i} fits (${box.width}px)`);
        const smallest = await charts.nth(i).evaluate((svg) =>
          Math.min(...[...svg.querySelectorAll('text')].filter((t) => t.textContent.trim()).map((t) => t.getBoundingClientRect().height)),
        );
        assert.ok(smallest >= 9, `${name}: chart ${i} text is ${smallest}px high`);
      }
      await shot(name);
    }
    await page.setViewportSize({ width: 1280, height: 900 });
  };

  const submitLead = async (email, first, company) => {
    const res = await fetch(`${base}/v1/forms/contact`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, first_name: first, company, consent: 'on' }),
    });
    assert.equal(res.status, 202);
  };
  const deadCount = async () => {
    const res = await page.request.get(`${base}/ui/dead-letters?destination=crm`);
    const m = (await res.text()).match(/(\d+) open dead letters? match/);
    return m ? Number(m[1]) : 0;
  };
  const waitForJob = async (name) => {
    await page.waitForURL(/\/ui\/jobs\//);
    await page.locator('#progress-text', { hasText: 'finished' }).waitFor({ timeout: 20000 });
    await shot(name);
  };

  await t.test('issues: failures grouped by cause, inspected, retried as a group', async () => {
    await page.setViewportSize({ width: 1280, height: 900 });
    state.failing = true;
    await submitLead('ravi.shah@example.com', 'Ravi', 'Shah Logistics');
    await submitLead('mei.chen@example.com', 'Mei', 'Chen Studio');
    await eventually('two dead letters', async () => (await deadCount()) === 2);
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Issues' }).click();
    const issue = page.locator('#issues tbody tr', { hasText: 'crm' });
    await issue.waitFor();
    assert.match(await issue.textContent(), /HTTP 500/);
    await shot('11-issues');
    await issue.getByRole('link').click();
    await page.locator('#issue-count', { hasText: '2' }).waitFor();
    await page.getByText('ravi.shah@example.com', { exact: true }).waitFor();
    // Attempt inspection: request and response side by side.
    const inspect = page.locator('details.inspect-attempt').first();
    assert.equal(await inspect.getAttribute('open'), '', 'the sample attempt is open');
    await inspect.getByRole('region', { name: /^Request of attempt/ }).getByText(/POST http/).waitFor();
    await inspect.getByRole('region', { name: /^Response of attempt/ }).getByText('CRM is down for maintenance').waitFor();
    // The request as sent: headers and body (the admin sees the address),
    // and copy-as-curl.
    const request = inspect.getByRole('region', { name: /^Request of attempt/ });
    await request.locator('dl.headers', { hasText: 'content-type' }).waitFor();
    assert.match(await request.locator('pre.request-body').textContent(), /(ravi\.shah|mei\.chen)@example\.com/);
    await request.getByText('Copy as curl').click();
    assert.match(await request.locator('pre.curl-command').textContent(), /^curl -X 'POST' 'http/);
    await shot('12-issue');
    state.failing = false;
    await page.getByRole('button', { name: 'Retry all 2' }).click();
    await waitForJob('13-issue-retry-progress');
    await eventually('both delivered', async () => state.delivered.filter((b) => /ravi\.shah|mei\.chen/.test(b)).length === 2);
    await page.goto(`${base}/ui/issues`);
    await page.getByText('No open issues').waitFor();
  });

  await t.test('bulk replay by filter shows the count before confirming, then progress', async () => {
    state.failing = true;
    await submitLead('ola.berg@example.com', 'Ola', 'Berg AS');
    await submitLead('ines.costa@example.com', 'Ines', 'Costa Lda');
    await eventually('two dead letters', async () => (await deadCount()) === 2);
    await page.goto(`${base}/ui/dead-letters`);
    await page.getByLabel('Destination').selectOption('crm');
    await page.getByRole('button', { name: 'Show' }).click();
    await page.locator('#dead-letters tbody tr', { hasText: 'Ines' }).waitFor();
    await page.locator('#dead-letters tbody tr', { hasText: 'Costa Lda' }).waitFor();
    await shot('14-dead-letters-filtered');
    await page.getByRole('button', { name: 'Replay…', exact: true }).click();
    await page.getByRole('heading', { name: 'Replay 2 dead letters?' }).waitFor();
    await shot('15-bulk-confirm');
    state.failing = false;
    await page.getByRole('button', { name: 'Yes, replay 2' }).click();
    await waitForJob('16-bulk-progress');
    await eventually('both delivered', async () => state.delivered.filter((b) => /ola\.berg|ines\.costa/.test(b)).length === 2);
  });

  await t.test('leads list shows delivery state and filters by it', async () => {
    await page.goto(`${base}/ui/leads?delivery=delivered`);
    await page.locator('#leads tbody tr', { hasText: 'ola.berg@example.com' }).getByText('crm: delivered').waitFor();
    await shot('17-leads-delivered');
    await page.goto(`${base}/ui/leads?delivery=failed`);
    await page.getByText('No leads match.').waitFor();
  });

  await t.test('contacts, review queue and privacy erase', async () => {
    await page.goto(`${base}/ui/contacts`);
    await page.locator('#contacts tbody tr', { hasText: 'mei.chen@example.com' }).getByRole('link').click();
    await page.locator('#golden tbody tr', { hasText: 'form:contact' }).first().waitFor();
    await shot('18-contact');
    await page.goto(`${base}/ui/review`);
    await page.getByText('Nothing to review.').waitFor();
    await shot('19-review');
    await page.goto(`${base}/ui/privacy`);
    await page.locator('#erase-email').fill('mei.chen@example.com');
    await page.locator('#erase-confirm').fill('mei.chen@example.com');
    await page.getByRole('button', { name: 'Erase this person' }).click();
    await page.getByRole('heading', { name: 'Erasure report' }).waitFor();
    await shot('20-privacy-erased');
    await page.goto(`${base}/ui/privacy`);
    await page.locator('#audit tbody tr').filter({ has: page.getByRole('cell', { name: 'erase', exact: true }) }).waitFor();
    assert.ok(!(await page.content()).includes('mei.chen@example.com'), 'the audit log never shows the address');
    await page.goto(`${base}/ui/contacts?q=mei.chen`);
    await page.getByText('No contacts match.').waitFor();
  });

  await t.test('bulk retry now and cancel on waiting deliveries, with counts and progress', async () => {
    // Pause the CRM from its page so leads wait.
    await page.goto(`${base}/ui/destinations`);
    await page.getByRole('row', { name: /crm/ }).getByRole('button', { name: 'Pause' }).click();
    await page.getByText('Destination paused.').waitFor();
    await submitLead('tom.reed@example.com', 'Tom', 'Reed & Co');
    await submitLead('ana.silva@example.com', 'Ana', 'Silva Lda');
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Waiting' }).click();
    await page.getByLabel('Destination').selectOption('crm');
    await page.getByRole('button', { name: 'Show' }).click();
    await page.locator('#waiting-total', { hasText: '2 waiting deliveries match the filter' }).waitFor();
    await page.locator('#waiting tbody tr', { hasText: 'ana.silva@example.com' }).waitFor();
    await shot('22-waiting');
    // Retry now, every match: the count first.
    await page.getByRole('button', { name: 'Retry now…' }).click();
    await page.getByRole('heading', { name: 'Retry now: 2 waiting deliveries?' }).waitFor();
    await shot('23-waiting-confirm-retry');
    await page.getByRole('button', { name: 'Yes, retry 2 now' }).click();
    await waitForJob('24-waiting-retry-progress');
    assert.match(await page.locator('#progress-text').textContent(), /2 of 2 processed \(100%\), 2 made due now/);
    // Cancel the ticked one, with a reason recorded on it.
    await page.goto(`${base}/ui/waiting?destination=crm`);
    await page.locator('#waiting tbody tr', { hasText: 'tom.reed@example.com' }).getByRole('checkbox').check();
    await page.getByLabel('the ticked rows').check();
    await page.getByRole('button', { name: 'Cancel…' }).click();
    await page.getByRole('heading', { name: 'Cancel: 1 waiting delivery?' }).waitFor();
    await page.getByLabel('Reason (recorded on each delivery)').fill('duplicate from the trade show import');
    await shot('25-waiting-confirm-cancel');
    await page.getByRole('button', { name: 'Yes, cancel 1 now' }).click();
    await waitForJob('26-waiting-cancel-progress');
    await page.goto(`${base}/ui/leads?q=tom.reed`);
    await page.locator('#leads tbody tr', { hasText: 'tom.reed@example.com' }).getByRole('link').first().click();
    await page.getByText(/cancelled by key:e2e-admin at .*duplicate from the trade show import/).first().waitFor();
    await shot('27-timeline-cancelled');
    // Resumed, the other one is delivered; the cancelled one never is.
    await page.goto(`${base}/ui/destinations`);
    await page.getByRole('row', { name: /crm/ }).getByRole('button', { name: /Resume/ }).click();
    await eventually('ana delivered', async () => state.delivered.some((b) => b.includes('ana.silva@example.com')));
    assert.ok(!state.delivered.some((b) => b.includes('tom.reed@example.com')), 'the cancelled lead is not sent');
    // CSRF: a bulk action without the token is refused.
    const forged = await page.request.post(`${base}/ui/waiting/bulk`, { form: { action: 'cancel', confirm: 'yes', reason: 'x' } });
    assert.equal(forged.status(), 403);
  });

  await t.test('a destination page charts latency and errors over a chosen range, also at 375 px', async () => {
    await page.goto(`${base}/ui/destinations`);
    await page.getByRole('link', { name: 'crm', exact: true }).click();
    await page.waitForURL(/\/ui\/destinations\/crm$/);
    await page.getByRole('heading', { name: /^crm/ }).waitFor();
    assert.equal(await page.locator('svg.chart').count(), 2, 'latency and errors charts');
    await page.locator('svg.chart[aria-label^="crm: attempt latency per day"]').waitFor();
    await page.locator('#errors').getByText('5xx answers').first().waitFor();
    await shot('28-destination-7d');
    await page.locator('#latency').getByRole('link', { name: 'last 24 hours' }).click();
    await page.waitForURL(/range=24h/);
    await page.locator('svg.chart[aria-label^="crm: attempt latency per hour, last 24 hours"]').waitFor();
    await page.getByText('Show the charts as a table').click();
    assert.ok((await page.locator('#series tbody tr').count()) >= 1);
    await shot('29-destination-24h');
    await checkPhone([
      [`${base}/ui/destinations/crm?range=24h`, '30-destination-phone'],
      [`${base}/ui/?range=24h`, '31-overview-phone-24h'],
      [`${base}/ui/waiting`, '32-waiting-phone'],
    ]);
  });

  await t.test('report pages: KPIs, every report with its chart, filters and CSV, a lead rated, at 375 px too', async () => {
    // Rate the lead from its page.
    await page.goto(`${base}/ui/leads/${eventId}`);
    await page.getByText('Not rated yet.').waitFor();
    await page.getByLabel('4', { exact: true }).check();
    await page.getByRole('button', { name: 'Save rating' }).click();
    await page.getByRole('status').filter({ hasText: 'Rating recorded' }).waitFor();
    // The feedback rollups catch up within seconds.
    await eventually('the rating on the lead page', async () => {
      await page.goto(`${base}/ui/leads/${eventId}`);
      return (await page.locator('#rating').textContent()).includes('Rated 4 of 5 via dashboard by e2e-admin');
    });
    await shot('33-lead-rated');
    // A won deal for a new lead from a campaign, through the API.
    const send = async (body) => {
      const res = await fetch(`${base}/v1/events`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      assert.equal(res.status, 202, await res.text());
    };
    await send({ type: 'lead.created', contact: { email: 'deal.maker@example.com' }, consent: { crm: false },
      attribution: { utm_source: 'google', utm_medium: 'cpc', utm_campaign: 'spring' } });
    await send({ type: 'deal.stage_changed', contact: { email: 'deal.maker@example.com' }, consent: { crm: false },
      data: { deal_id: 'e2e-1', stage: 'closedwon', amount: 5000 } });
    await page.goto(`${base}/ui/reports`);
    await page.getByRole('heading', { name: 'KPIs against their targets' }).waitFor();
    assert.equal(await page.locator('#kpi-table tbody tr').count(), 6, 'the six KPIs');
    await page.locator('svg.chart[aria-label^="KPIs against their targets"]').waitFor();
    await shot('34-reports-kpis');
    await page.getByRole('link', { name: 'Funnel and conversion' }).click();
    await page.waitForURL(/\/ui\/reports\/funnel$/);
    await page.locator('#report-table tbody tr', { hasText: 'won' }).first().waitFor();
    await page.locator('svg.chart').waitFor();
    await shot('35-report-funnel');
    const names = ['velocity', 'win-rates', 'time-in-stage', 'outliers', 'channels', 'attribution', 'forecast',
      'forecast-accuracy', 'feedback', 'calibration'];
    for (const name of names) {
      const res = await page.goto(`${base}/ui/reports/${name}`);
      assert.equal(res.status(), 200, name);
      await page.locator('#report-table').waitFor();
      await shot(`36-report-${name}`);
    }
    // The attribution report credits the won deal to paid search.
    await eventually('the won deal in the attribution report', async () => {
      await page.goto(`${base}/ui/reports/attribution`);
      return (await page.locator('#report-table tbody tr', { hasText: 'e2e-1' }).count()) > 0;
    });
    assert.ok(await page.locator('svg.chart').count() === 1, 'attribution chart');
    // Filters: group win rates by channel, then a source that has nothing.
    await page.goto(`${base}/ui/reports/win-rates`);
    await page.getByLabel('Group by').selectOption('channel');
    await page.getByRole('button', { name: 'Apply' }).click();
    await page.waitForURL(/by=channel/);
    await page.locator('#report-table tbody tr', { hasText: 'paid_search' }).first().waitFor();
    await shot('37-win-rates-by-channel');
    await page.getByLabel('Source').fill('nowhere');
    await page.getByRole('button', { name: 'Apply' }).click();
    await page.waitForURL(/source=nowhere/);
    await page.getByText('Nothing in this range with these filters.').waitFor();
    // The CSV download carries the same filters.
    const href = await page.locator('#csv').getAttribute('href');
    assert.match(href, /\/ui\/reports\/win-rates\/csv\?.*source=nowhere/);
    const csv = await page.request.get(`${base}${href}`);
    assert.equal(csv.status(), 200);
    assert.match(csv.headers()['content-type'], /^text\/csv/);
    assert.match(await csv.text(), /^channel,won,lost,win_rate,/);
    // The feedback report counts the rating; bad filters say what is wrong.
    await page.goto(`${base}/ui/reports/feedback?by=form`);
    await page.locator('#report-table tbody tr', { hasText: 'form:contact' }).first().waitFor();
    const bad = await page.goto(`${base}/ui/reports/funnel?since=tomorrow`);
    assert.equal(bad.status(), 400);
    await page.getByText('since: "tomorrow" is not a date (YYYY-MM-DD)').waitFor();
    await checkPhone([
      [`${base}/ui/reports`, '38-reports-phone'],
      [`${base}/ui/reports/channels`, '39-channels-phone'],
      [`${base}/ui/reports/calibration`, '40-calibration-phone'],
    ]);
  });

  await t.test('a person\'s sequence memberships and the overflow queue', async () => {
    const webinar = async (email, first) => {
      const res = await fetch(`${base}/v1/forms/webinar`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email, first_name: first, consent: 'on' }),
      });
      assert.equal(res.status, 202);
    };
    // An add limit of one a day: Lee is enrolled in the lemlist campaign ...
    await webinar('lee.park@example.com', 'Lee');
    await page.goto(`${base}/ui/contacts?q=lee.park`);
    await page.locator('#contacts tbody tr', { hasText: 'lee.park@example.com' }).getByRole('link').click();
    await page.waitForURL(/\/ui\/contacts\/[0-9a-f-]{36}$/);
    await eventually('Lee is active in the campaign', async () => {
      await page.reload();
      return (await page.locator('#memberships .badge.membership.active').count()) === 1;
    });
    const membership = await page.locator('#memberships tbody tr', { hasText: 'lemlist' }).textContent();
    assert.match(membership, /cam_fakeOnboarding01/);
    assert.match(membership, /onboarding/);
    assert.match(membership, /enrolled/);
    await shot('33-contact-memberships');
    // ... and Kai, the second today, waits in the overflow queue.
    await webinar('kai.moss@example.com', 'Kai');
    const row = page.locator('#overflow tbody tr', { hasText: 'kai.moss@example.com' });
    await eventually('Kai waits in the overflow queue', async () => {
      await page.goto(`${base}/ui/overflow`);
      return (await row.count()) === 1;
    });
    const waiting = await row.textContent();
    assert.match(waiting, /onboarding/);
    assert.match(waiting, /add limit 1\/1day reached/);
    assert.match(await page.locator('main p.muted').first().textContent(), /1 waiting/);
    await shot('34-overflow');
    // Kai's contact page says queued, with the reason.
    await page.goto(`${base}/ui/contacts?q=kai.moss`);
    await page.locator('#contacts tbody tr', { hasText: 'kai.moss@example.com' }).getByRole('link').click();
    await page.locator('#memberships .badge.membership.queued').waitFor();
    assert.match(await page.locator('#memberships tbody tr').first().textContent(), /add limit/);
    await shot('35-contact-queued');
    // The queue at phone width: no horizontal page scroll.
    await page.setViewportSize({ width: 375, height: 812 });
    await page.goto(`${base}/ui/overflow`);
    const wide = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(wide <= 1, `overflow queue: no horizontal page scroll at 375 px (overflow ${wide}px)`);
    await shot('36-overflow-phone');
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  await t.test('a viewer sees masked data and no actions', async () => {
    const viewerKey = execFileSync(BIN, ['keys', 'create', '--name', 'e2e-viewer', '--role', 'viewer'], {
      env,
      encoding: 'utf8',
    }).trim();
    const vctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const v = await vctx.newPage();
    await v.goto(`${base}/ui/login`);
    await v.getByLabel('API key').fill(viewerKey);
    await v.keyboard.press('Enter');
    await v.waitForURL(`${base}/ui/`);
    await v.goto(`${base}/ui/leads`);
    await v.locator('#leads tbody tr', { hasText: 'Ravi' }).waitFor();
    assert.ok(!(await v.content()).includes('ravi.shah@example.com'), 'emails masked for viewers');
    await v.screenshot({ path: path.join(ARTIFACTS, '21-viewer-leads.png'), fullPage: true });
    assert.equal(await v.getByRole('link', { name: 'Privacy' }).count(), 0);
    await v.goto(`${base}/ui/privacy`);
    await v.getByRole('heading', { name: 'Not allowed' }).waitFor();
    await v.goto(`${base}/ui/destinations`);
    assert.equal(await v.getByRole('button', { name: 'Pause' }).count(), 0);
    // Every page, as a viewer: readable, masked, without actions.
    const pages = [
      ['/ui/', 'overview'], ['/ui/leads', 'leads'], ['/ui/issues', 'issues'], ['/ui/dead-letters', 'dead-letters'],
      ['/ui/waiting', 'waiting'], ['/ui/destinations', 'destinations'], ['/ui/destinations/crm?range=24h', 'destination'],
      ['/ui/contacts', 'contacts'], ['/ui/review', 'review'], ['/ui/fixable', 'fixable'],
      ['/ui/reports', 'reports'], ['/ui/reports/calibration', 'calibration'], ['/ui/reports/outliers', 'outliers'],
      ['/ui/overflow', 'overflow'],
    ];
    for (const [url, name] of pages) {
      const res = await v.goto(`${base}${url}`);
      assert.equal(res.status(), 200, `${url} for a viewer`);
      assert.equal(await v.locator('form[method="post"]:not(.signout)').count(), 0, `${url}: no action forms for a viewer`);
      assert.doesNotMatch(await v.content(), /(ravi\.shah|ola\.berg|ana\.silva|tom\.reed|dana\.lopez|lee\.park|kai\.moss)@example\.com/, `${url}: emails masked for a viewer`);
      await v.screenshot({ path: path.join(ARTIFACTS, `viewer-${name}.png`), fullPage: true });
    }
    // The attempt inspection, masked, without copy-as-curl.
    await v.goto(`${base}/ui/leads/${eventId}`);
    await v.locator('details.inspect-attempt').first().waitFor();
    assert.equal(await v.getByText('Copy as curl').count(), 0, 'no copy-as-curl for viewers');
    await v.screenshot({ path: path.join(ARTIFACTS, 'viewer-timeline.png'), fullPage: true });
    assert.equal(await v.getByRole('button', { name: 'Save rating' }).count(), 0, 'no rating form for viewers');
    assert.ok(!(await v.content()).includes('by e2e-admin'), 'who rated is hidden from viewers');
    // Viewers cannot act, even with a valid CSRF token.
    const html = await v.content();
    const csrf = html.match(/name="csrf" value="([^"]+)"/)[1];
    for (const [url, form] of [
      ['/ui/waiting/bulk', { csrf, action: 'retry_now', confirm: 'yes' }],
      ['/ui/dead-letters/bulk', { csrf, action: 'replay', confirm: 'yes' }],
      ['/ui/destinations/crm/pause', { csrf, hours: '1' }],
      [`/ui/leads/${eventId}/rate`, { csrf, rating: '1' }],
    ]) {
      const res = await v.request.post(`${base}${url}`, { form });
      assert.equal(res.status(), 403, `${url} refused for a viewer`);
    }
    await vctx.close();
  });

  await t.test('a form without its CSRF token is refused', async () => {
    const res = await page.request.post(`${base}/ui/destinations/crm/pause`, { form: { hours: '1' } });
    assert.equal(res.status(), 403);
    const bulk = await page.request.post(`${base}/ui/dead-letters/bulk`, { form: { action: 'replay', confirm: 'yes' } });
    assert.equal(bulk.status(), 403);
  });
});
