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

async function api(method, path, body, as = key) {
  const res = await fetch(base + path, {
    method,
    headers: { Authorization: 'Bearer ' + as, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function shot(name, p = page) {
  await p.screenshot({ path: join(artifacts, name + '.png'), fullPage: true });
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
  page = await newPage();
});

// newPage opens a page in a context of its own (its own sessionStorage,
// so its own key) that reports what it asks of anything but chatq.
async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const p = await context.newPage();
  // The console loads nothing from anywhere but chatq.
  p.on('request', (r) => {
    const u = new URL(r.url());
    if (u.protocol !== 'data:' && u.origin !== base) logs.push('request outside chatq: ' + r.url());
  });
  p.on('console', (m) => m.type() === 'error' && logs.push('browser: ' + m.text()));
  return p;
}

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

test('a tenant key sees its own campaign, messages and senders alone', { skip }, async () => {
  const acmeSender = '4915100000301';
  const added = await api('POST', '/v1/senders', { number: acmeSender, app_id: 'acme-app', app_secret: 'acme-secret', tenant: 'acme' });
  assert.equal(added.status, 201, JSON.stringify(added.body));
  const created = await api('POST', '/v1/keys', { tenant: 'acme', name: 'console-test' });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const acme = created.body.key;
  // A campaign of one name from acme and from tenant default (the admin
  // key's), both writing to one recipient.
  const batch = 'launch-' + randomBytes(3).toString('hex');
  const shared = '4477009300';
  const text = (destination) => ({ destination, payload: { type: 'text', message: 'We are open' }, batch_id: batch });
  const own = await api('POST', '/v1/messages/batch', { messages: [text(shared), text('4477009301')] }, acme);
  assert.equal(own.status, 200, JSON.stringify(own.body));
  const ownIds = own.body.results.map((r) => r.id);
  assert.equal(ownIds.filter(Boolean).length, 2, JSON.stringify(own.body));
  const other = await api('POST', '/v1/messages', text(shared));
  assert.equal(other.status, 202, JSON.stringify(other.body));

  const p = await newPage();
  try {
    await p.goto(base + '/console/');
    await p.fill('input[name=key]', acme);
    await p.click('button[type=submit]');
    await p.locator('[data-testid=tenant]').getByText('tenant acme').waitFor();
    await p.locator('[data-testid=who]').getByText('tenant acme').waitFor();
    // The overview: its campaign and its sender, no deployment-wide chart
    // or queues, and no error.
    await p.locator(`tr[data-batch="${batch}"]`).waitFor();
    await p.locator(`tr[data-number="${acmeSender}"]`).waitFor();
    assert.equal(await p.locator('tr[data-number]').count(), 1, 'acme sees its one sender');
    assert.equal(await p.locator('.uplot').count(), 0, 'no chart of every tenant');
    assert.equal(await p.getByRole('alert').count(), 0, 'no error on the overview');
    await shot('tenant-overview', p);

    // The campaigns: its own, counted without tenant default's message.
    await p.goto(base + '/console/campaigns');
    const row = p.locator(`tr[data-batch="${batch}"]`);
    await row.waitFor();
    assert.equal(await row.locator('td.num').first().innerText(), '2');
    assert.equal(await p.locator('tr[data-batch]').count(), 1, 'acme sees its one campaign, not the admin key\'s');
    await shot('tenant-campaigns', p);
    await row.locator('a').click();
    await p.getByRole('heading', { name: '2 messages' }).waitFor();
    await p.locator(`tr[data-id="${ownIds[0]}"]`).waitFor();
    assert.equal(await p.locator(`tr[data-id="${other.body.id}"]`).count(), 0);

    // The shared recipient's messages: acme's alone.
    await p.goto(base + '/console/messages?destination=' + shared);
    await p.locator(`tr[data-id="${ownIds[0]}"]`).waitFor();
    assert.equal(await p.locator('table.messages tbody tr').count(), 1, "the recipient's messages of acme alone");
    await shot('tenant-messages', p);
    // Another tenant's message is not found, as an unknown id.
    await p.goto(base + '/console/messages/' + other.body.id);
    await p.getByRole('alert').waitFor();
    assert.equal(await p.locator('[data-testid=timeline]').count(), 0);

    // Senders are an admin's: acme sees its own, read only.
    await p.goto(base + '/console/senders');
    await p.locator('[data-testid=managed-by-admin]').waitFor();
    await p.locator(`tr[data-number="${acmeSender}"]`).waitFor();
    assert.equal(await p.getByRole('button', { name: 'Pause' }).count(), 0);
    await shot('tenant-senders', p);
  } finally {
    await p.context().close();
  }

  // An admin reads acme's dead letters by naming the tenant, and retries
  // one there.
  const dying = await api('POST', '/v1/messages', { destination: '4477010002', payload: { type: 'text', message: 'Hello' } }, acme);
  assert.equal(dying.status, 202, JSON.stringify(dying.body));
  await until("acme's message to die", async () => (await api('GET', '/v1/messages/' + dying.body.id)).body.status === 'dead');
  await page.goto(base + '/console/dead-letters');
  await page.locator('input[name=tenant]').fill('acme');
  await page.getByRole('button', { name: 'Filter' }).click();
  const dead = page.locator(`tr[data-id="${dying.body.id}"]`);
  await dead.waitFor();
  assert.match(page.url(), /tenant=acme/);
  await shot('dead-letters-tenant');
  await dead.locator('input[type=checkbox]').check();
  page.once('dialog', (d) => d.accept());
  await page.getByText('Retry selected (1)').click();
  await page.locator('[data-testid=retried]').getByText('Retried 1').waitFor();
  const notes = (await api('GET', '/v1/messages/' + dying.body.id)).body.history.map((h) => h.note || '');
  assert.ok(notes.some((n) => n.includes('retried')), 'history notes the retry: ' + notes.join(', '));
});

test('a sender is paused and resumed from the senders page', { skip }, async () => {
  const number = '4915100000310';
  const added = await api('POST', '/v1/senders', { number, app_id: 'bolt-app', app_secret: 'bolt-secret', tenant: 'bolt', rate_per_second: 20 });
  assert.equal(added.status, 201, JSON.stringify(added.body));
  const state = async () => (await api('GET', '/v1/senders/' + number)).body.state;

  await page.goto(base + '/console/senders');
  const row = page.locator(`tr[data-number="${number}"]`);
  await row.waitFor();
  assert.match(await row.innerText(), /20\/s, burst 20/);
  // The environment's sender changes in the environment alone.
  await page.locator('tr[data-number="15550001234"]').getByText('set in the environment').waitFor();

  page.once('dialog', (d) => d.accept());
  await row.getByRole('button', { name: 'Pause' }).click();
  await row.locator('[data-state=paused]').waitFor();
  await page.locator('[data-testid=sender-changed]').getByText(number + ' is now paused').waitFor();
  assert.equal(await state(), 'paused');
  await shot('senders');
  // A message of the paused sender waits, its status unchanged, and says so.
  const bolt = await api('POST', '/v1/keys', { tenant: 'bolt', name: 'console-wait' });
  assert.equal(bolt.status, 201, JSON.stringify(bolt.body));
  // Workers see a pause within a second: a message sent before may still
  // go. Each try goes to a recipient of its own, so that none waits for
  // its turn behind the one before.
  let held, r, tries = 0;
  await until('a message of the paused sender waits', async () => {
    r = held && (await api('GET', '/v1/messages/' + held.body.id)).body;
    if (r?.waiting?.reason === 'paused') return true;
    if (!r || !['queued', 'sending'].includes(r.status)) {
      const destination = '44770093' + String(11 + tries++).padStart(2, '0');
      held = await api('POST', '/v1/messages', { destination, sender: number, payload: { type: 'text', message: 'Held' } }, bolt.body.key);
      assert.equal(held.status, 202, JSON.stringify(held.body));
    }
    return false;
  }).catch((e) => {
    throw new Error(`${e.message}; the last try: ${JSON.stringify(r)}`);
  });
  await page.goto(base + '/console/messages/' + held.body.id);
  await page.locator('[data-testid=waiting]').getByText('paused').waitFor();
  assert.equal(await page.locator('[data-testid=timeline] li[data-status=sending]').count(), 0);
  // A bulk message of the paused sender waits in the sender's lane, with
  // no task yet; the admin's search lists it by what it waits for, in its
  // tenant's messages.
  const laned = await api('POST', '/v1/messages', { destination: '4477009399', sender: number, priority: 'bulk', payload: { type: 'text', message: 'In the lane' } }, bolt.body.key);
  assert.equal(laned.status, 202, JSON.stringify(laned.body));
  await page.goto(base + '/console/messages');
  await page.locator('input[name=tenant]').fill('bolt');
  await page.locator('select[name=waiting]').selectOption('paused');
  await page.getByRole('button', { name: 'Search' }).click();
  const lanedRow = page.locator(`tr[data-id="${laned.body.id}"]`);
  await lanedRow.waitFor();
  assert.match(await lanedRow.innerText(), /waiting: paused/);
  assert.match(page.url(), /tenant=bolt/);
  await shot('messages-waiting');
  // The overview lists it with its state.
  await page.goto(base + '/console/');
  await page.locator(`tr[data-number="${number}"] [data-state=paused]`).waitFor();

  await page.goto(base + '/console/senders');
  await row.getByRole('button', { name: 'Resume' }).click();
  await row.locator('[data-state=active]').waitFor();
  assert.equal(await state(), 'active');
  await until('the held message goes once its sender resumes', async () => {
    const r = (await api('GET', '/v1/messages/' + held.body.id)).body;
    return r.waiting === null && ['submitted', 'enqueued', 'sent', 'delivered', 'read'].includes(r.status);
  });
});
