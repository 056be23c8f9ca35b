// Browser tests of the console: a real `chatq dev` (embedded Redis and
// ChatArchitect sandbox) driven through Debian's chromium with
// playwright-core. Run by `make test-console`; screenshots of every page
// go to CHATQ_CONSOLE_ARTIFACTS (test-artifacts/console by default).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const repo = fileURLToPath(new URL('../../../..', import.meta.url));
const CHROMIUM = process.env.CHATQ_CHROMIUM || '/usr/bin/chromium';
const artifacts = process.env.CHATQ_CONSOLE_ARTIFACTS || join(repo, 'test-artifacts', 'console');
const ci = process.env.CI === 'true';
const key = 'console_test_' + randomBytes(12).toString('hex');

// Without chromium the tests are skipped on a laptop, and fail in CI.
const missing = existsSync(CHROMIUM) ? '' : `chromium not found at ${CHROMIUM} (apt-get install -y chromium)`;
if (missing && ci) throw new Error(missing);
const skip = missing || false;

let tmp, chatq, base, browser, page;
const logs = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// until calls f until it returns a truthy value, or fails after ms.
async function until(what, f, ms = 30000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`waited ${ms}ms for ${what}${last ? ': ' + last.message : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function api(method, path, body) {
  const res = await fetch(base + path, {
    method,
    headers: { Authorization: 'Bearer ' + key, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function shot(name) {
  await page.screenshot({ path: join(artifacts, name + '.png'), fullPage: true });
}

before(async () => {
  if (skip) return;
  mkdirSync(artifacts, { recursive: true });
  tmp = mkdtempSync(join(tmpdir(), 'chatq-console-'));
  const bin = join(tmp, 'chatq');
  execFileSync('go', ['build', '-o', bin, './cmd/chatq'], { cwd: repo, stdio: 'inherit' });
  const [httpPort, sandboxPort] = [await freePort(), await freePort()];
  base = `http://127.0.0.1:${httpPort}`;
  chatq = spawn(bin, ['dev'], {
    env: {
      ...process.env,
      CHATQ_HTTP_ADDR: `127.0.0.1:${httpPort}`,
      CHATQ_SANDBOX_ADDR: `127.0.0.1:${sandboxPort}`,
      CHATQ_API_KEYS: key,
      CHATQ_LOG_LEVEL: 'warn',
      // Dead letters die at once; retries of the others come quickly.
      CHATQ_RETRY_BASE_DELAY: '1s',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  chatq.stdout.on('data', (d) => logs.push(d.toString()));
  chatq.stderr.on('data', (d) => logs.push(d.toString()));
  await until('chatq dev to answer /readyz', async () => (await fetch(base + '/readyz')).ok, 60000);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  });
  page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
  // The console loads nothing from anywhere but chatq.
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.protocol !== 'data:' && u.origin !== base) logs.push('request outside chatq: ' + r.url());
  });
  page.on('console', (m) => m.type() === 'error' && logs.push('browser: ' + m.text()));
});

after(async () => {
  await browser?.close();
  if (chatq) {
    chatq.kill('SIGTERM');
    await new Promise((r) => chatq.once('exit', r));
  }
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  const outside = logs.filter((l) => l.startsWith('request outside chatq') || l.includes('Content Security Policy'));
  if (outside.length) throw new Error(outside.join('\n'));
});

test('sign in with an API key', { skip }, async () => {
  await page.goto(base + '/console/');
  await page.fill('input[name=key]', 'not-a-key');
  await page.click('button[type=submit]');
  await page.getByRole('alert').getByText('not one of chatq').waitFor();
  await shot('sign-in');
  await page.fill('input[name=key]', key);
  await page.click('button[type=submit]');
  await page.locator('nav.sidebar').getByText('Dead letters').waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('chatq.apiKey')), key);
});

test('a message sent from the API reaches read in its timeline', { skip }, async () => {
  const sent = await api('POST', '/v1/messages', {
    destination: '4477009001',
    payload: { type: 'text', message: 'Your table is ready' },
    metadata: { order: 'A-17' },
  });
  assert.equal(sent.status, 202);
  await page.goto(base + '/console/messages/' + sent.body.id);
  await page.locator('[data-testid=timeline] li[data-status=read]').waitFor({ timeout: 30000 });
  for (const st of ['queued', 'sending', 'submitted', 'delivered', 'read']) {
    assert.equal(await page.locator(`[data-testid=timeline] li[data-status=${st}]`).count() > 0, true, st + ' in the timeline');
  }
  // Found again by its recipient.
  await page.goto(base + '/console/messages?destination=4477009001');
  await page.locator(`tr[data-id="${sent.body.id}"]`).waitFor();
  await page.goto(base + '/console/messages/' + sent.body.id);
  await page.locator('[data-testid=timeline] li[data-status=read]').waitFor();
  await shot('message');
});

test('a CSV campaign shows its bad row before anything is sent, then sends the good rows', { skip }, async () => {
  const batch = 'spring-' + randomBytes(3).toString('hex');
  await until('the template cache', async () => (await api('GET', '/v1/templates')).body.templates?.length > 0);
  await page.goto(base + '/console/new-campaign');
  await page.selectOption('select[name=pick]', 'welcome_offer|en_US');
  await page.fill('input[name=batch]', batch);
  const csv = 'destination,1,2\n4477009101,Ann,SPRING10\n4477009102,Bob,SPRING10\n12ab,Cy,SPRING10\n4477009104,Dee,SPRING10\n';
  await page.setInputFiles('input[name=csv]', { name: 'spring.csv', mimeType: 'text/csv', buffer: Buffer.from(csv) });
  await page.getByText('Check every row').click();
  const bad = page.locator('tr[data-line="4"]');
  await bad.locator('.row-error').waitFor();
  assert.match(await bad.locator('.row-error').innerText(), /^destination: .*12ab/);
  assert.match(await page.locator('[data-testid=check-summary]').innerText(), /3 rows ready to send; 1 with errors/);
  assert.equal((await api('GET', '/v1/batches/' + batch)).status, 404, 'nothing is sent by the check');
  await shot('new-campaign');
  await page.click('[data-testid=send]');
  await page.locator('[data-testid=sent]').getByText('Queued 3 messages').waitFor();
  const counts = await api('GET', '/v1/batches/' + batch);
  assert.equal(counts.body.total, 3);
  // Its live funnel reaches read for all three.
  await page.locator('[data-testid=sent] a').click();
  await page.locator('[data-testid=funnel] [data-stage=read] .n').getByText('3', { exact: true }).waitFor({ timeout: 30000 });
  await shot('campaign');
  await page.goto(base + '/console/campaigns');
  await page.locator(`tr[data-batch="${batch}"]`).waitFor();
  await shot('campaigns');
  // The campaign's messages, found by the search.
  await page.goto(base + '/console/messages?batch_id=' + batch + '&status=read');
  await until('the search to list the campaign', async () => (await page.locator('table.messages tbody tr').count()) === 3);
  await shot('messages');
});

test('a dead letter is retried from the console', { skip }, async () => {
  const sent = await api('POST', '/v1/messages', { destination: '4477000002', payload: { type: 'text', message: 'Hello' } });
  assert.equal(sent.status, 202);
  const id = sent.body.id;
  await until('the message to die', async () => (await api('GET', '/v1/messages/' + id)).body.status === 'dead');
  await page.goto(base + '/console/dead-letters?class=permanent');
  const row = page.locator(`tr[data-id="${id}"]`);
  await row.waitFor();
  await shot('dead-letters');
  await row.locator('input[type=checkbox]').check();
  page.once('dialog', (d) => d.accept());
  await page.getByText('Retry selected (1)').click();
  await page.locator('[data-testid=retried]').getByText('Retried 1').waitFor();
  const rec = (await api('GET', '/v1/messages/' + id)).body;
  const notes = rec.history.map((h) => h.status + ':' + (h.note || ''));
  assert.ok(notes.some((n) => n.startsWith('queued:') && n.includes('retried')), 'history notes the retry: ' + notes.join(', '));
  // Its timeline tells the retry and the error it died of again.
  await page.goto(base + '/console/messages/' + id);
  await page.locator('[data-testid=timeline]').getByText('retried by an operator').waitFor();
  await page.locator('.card.bad').getByText('Invalid Destination').waitFor();
  await shot('message-dead');
});

test('the overview charts the last hour and shows the queues and the circuit', { skip }, async () => {
  await page.goto(base + '/console/');
  await page.locator('.uplot canvas').waitFor();
  await until('read messages counted in the overview', async () => {
    const n = await page.locator('[data-testid=total-read] .n').innerText();
    return Number(n.replace(/\D/g, '')) >= 4;
  });
  assert.match(await page.locator('[data-testid=circuit]').innerText(), /Sending/);
  await page.getByRole('cell', { name: 'transactional' }).waitFor();
  await shot('overview');
});
