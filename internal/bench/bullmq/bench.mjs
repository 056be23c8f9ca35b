// BullMQ on the Redis chatq bench started, so that its figures stand beside
// chatq's and bare asynq's from the same run: addBulk in batches, as
// SendBatch is measured, then a no-op worker taking every job, as asynq's
// no-op baseline is. Prints one JSON line with both rates.
//
// node bench.mjs --port 6380 [--host 127.0.0.1] [--jobs 100000]
//   [--batch 1000] [--callers 2] [--concurrency 50]
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string' },
    jobs: { type: 'string', default: '100000' },
    batch: { type: 'string', default: '1000' },
    callers: { type: 'string', default: '2' },
    concurrency: { type: 'string', default: '50' },
  },
});

function positive(name) {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n <= 0) {
    throw new Error(`--${name} must be a positive integer, not ${JSON.stringify(values[name])}`);
  }
  return n;
}

const port = positive('port');
const jobs = positive('jobs');
const batch = positive('batch');
const callers = positive('callers');
const concurrency = positive('concurrency');
// BullMQ needs ready-made ioredis clients when loaded as an ES module.
const clients = [];
const redis = () => {
  const c = new Redis({ host: values.host, port, maxRetriesPerRequest: null });
  clients.push(c);
  return c;
};
const name = 'chatq-bench';

// Each job carries a 26-character id, as a chatq task does, and is removed
// once done, as asynq removes a task without retention.
const options = { removeOnComplete: true, removeOnFail: true };
const batches = [];
for (let from = 0; from < jobs; from += batch) {
  const list = [];
  for (let i = from; i < Math.min(from + batch, jobs); i++) {
    list.push({ name: 'noop', data: { id: randomBytes(13).toString('hex') }, opts: options });
  }
  batches.push(list);
}

const queue = new Queue(name, { connection: redis() });
await queue.waitUntilReady();

let next = 0;
const addStart = performance.now();
await Promise.all(
  Array.from({ length: Math.min(callers, batches.length) }, async () => {
    while (next < batches.length) {
      await queue.addBulk(batches[next++]);
    }
  }),
);
const addSeconds = (performance.now() - addStart) / 1000;

let done = 0;
let lastEnd = 0;
let finished;
const allDone = new Promise((resolve) => {
  finished = resolve;
});
const processStart = performance.now();
const worker = new Worker(
  name,
  async () => {
    done++;
    lastEnd = performance.now();
    if (done === jobs) {
      finished();
    }
  },
  { connection: redis(), concurrency },
);
worker.on('error', (err) => {
  console.error(`bullmq worker: ${err.message}`);
});
await allDone;
const processSeconds = (lastEnd - processStart) / 1000;
await worker.close();
await queue.close();
await Promise.all(clients.map((c) => c.quit()));

const { version } = JSON.parse(
  await import('node:fs').then((fs) => fs.promises.readFile(new URL('./node_modules/bullmq/package.json', import.meta.url), 'utf8')),
);
console.log(
  JSON.stringify({
    version,
    jobs,
    add_bulk_seconds: addSeconds,
    add_bulk_per_second: jobs / addSeconds,
    process_seconds: processSeconds,
    process_per_second: jobs / processSeconds,
  }),
);
