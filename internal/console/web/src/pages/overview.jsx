import { get, qs } from '../api.js';
import { MinuteChart } from '../chart.jsx';
import { href } from '../router.js';
import { Card, Empty, ErrorBox, Time, ago, usePoll } from '../ui.jsx';
import { funnel } from './campaigns.jsx';
import { SenderTable } from './senders.jsx';

// The statuses the chart draws: what a message goes through, and how it
// can end.
const CHARTED = ['queued', 'retrying', 'submitted', 'delivered', 'read', 'failed', 'dead'];

function Sending({ ready, admin }) {
  if (!ready) return <Empty>Reading /readyz…</Empty>;
  const c = ready.circuit;
  const open = c && c.state === 'open';
  return (
    <div class="sending">
      <div class={'state ' + (open ? 'bad' : 'good')} data-testid="circuit">
        <span class="dot" />
        {open ? (c.manual ? 'Paused by an operator' : 'Circuit open: sending paused') : 'Sending'}
      </div>
      <dl>
        <dt>Redis</dt>
        <dd>{ready.redis}</dd>
        <dt>Circuit breaker</dt>
        <dd>{c ? c.state : 'not reported'}</dd>
        {open && c.reason ? (
          <>
            <dt>Reason</dt>
            <dd>
              {c.reason} {c.code ? <code>{c.code}</code> : null}
            </dd>
          </>
        ) : null}
        {open && c.since ? (
          <>
            <dt>Since</dt>
            <dd>
              <Time at={c.since} />
            </dd>
          </>
        ) : null}
        {open && c.next_probe ? (
          <>
            <dt>Next probe</dt>
            <dd>
              <Time at={c.next_probe} />
            </dd>
          </>
        ) : null}
        {open && c.message_id && admin ? (
          <>
            <dt>Opened by</dt>
            <dd>
              <a href={'/console/messages/' + c.message_id}>{c.message_id}</a>
            </dd>
          </>
        ) : null}
      </dl>
    </div>
  );
}

function Senders({ stats }) {
  return (
    <Card title="Senders" actions={<a href={href('/senders')}>{stats?.admin ? 'Pause or resume' : 'Details'}</a>}>
      {stats ? <SenderTable senders={stats.senders} showTenant={stats.admin} /> : <Empty>Loading…</Empty>}
    </Card>
  );
}

// Campaigns are a tenant's overview of its traffic: the per-minute counts
// and the queues are the whole deployment's, and only an admin key sees
// them.
function Campaigns() {
  const [data, err] = usePoll(async () => {
    const page = await get('/v1/batches' + qs({ limit: 5 }));
    const counts = await Promise.all(page.batches.map((b) => get('/v1/batches/' + encodeURIComponent(b.batch_id)).catch(() => null)));
    return page.batches.map((b, i) => ({ ...b, ...(counts[i] || { total: 0, counts: {} }) }));
  }, 5000);
  return (
    <Card title="Latest campaigns" actions={<a href={href('/campaigns')}>Every campaign</a>}>
      <ErrorBox error={err} />
      {!data ? (
        <Empty>Loading…</Empty>
      ) : !data.length ? (
        <Empty>No campaign yet.</Empty>
      ) : (
        <table>
          <thead>
            <tr>
              <th>campaign</th>
              <th>latest message</th>
              <th class="num">messages</th>
              {funnel({}).map((s) => (
                <th class="num">{s.stage}</th>
              ))}
            </tr>
          </thead>
          <tbody>
            {data.map((b) => (
              <tr data-batch={b.batch_id}>
                <td>
                  <a href={href('/campaigns/' + encodeURIComponent(b.batch_id))}>{b.batch_id}</a>
                </td>
                <td title={b.last_created_at}>{ago(b.last_created_at)}</td>
                <td class="num">{b.total}</td>
                {funnel(b.counts).map((s) => (
                  <td class="num">{s.n}</td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Card>
  );
}

function TenantOverview({ stats, ready, error }) {
  return (
    <div class="page">
      <h1>
        Overview <span class="badge plain" data-testid="tenant">tenant {stats.tenant}</span>
      </h1>
      <ErrorBox error={error} />
      <Campaigns />
      <div class="two">
        <Senders stats={stats} />
        <Card title="Sending">
          <Sending ready={ready} admin={false} />
        </Card>
      </div>
    </div>
  );
}

function Overview() {
  const [stats, err] = usePoll(() => get('/v1/stats'), 5000);
  const [ready, readyErr] = usePoll(() => fetch('/readyz').then((r) => r.json()), 5000);
  if (stats && !stats.admin) return <TenantOverview stats={stats} ready={ready} error={err || readyErr} />;
  if (!stats && !err) {
    return (
      <div class="page">
        <h1>Overview</h1>
        <Empty>Loading…</Empty>
      </div>
    );
  }
  const totals = {};
  for (const m of stats?.minutes || []) for (const [s, n] of Object.entries(m.counts)) totals[s] = (totals[s] || 0) + n;
  return (
    <div class="page">
      <h1>Overview</h1>
      <ErrorBox error={err || readyErr} />
      <div class="tiles">
        {CHARTED.map((s) => (
          <div class="tile" data-testid={'total-' + s}>
            <div class="n">{(totals[s] || 0).toLocaleString()}</div>
            <div class="label">{s} in the last hour</div>
          </div>
        ))}
      </div>
      <Card title="Status changes per minute, last hour">
        {stats ? <MinuteChart minutes={stats.minutes} statuses={CHARTED} /> : <Empty>Loading…</Empty>}
      </Card>
      <div class="two">
        <Card title="Queues">
          {stats ? (
            <table>
              <thead>
                <tr>
                  <th>queue</th>
                  <th class="num">pending</th>
                  <th class="num">active</th>
                  <th class="num">scheduled</th>
                  <th class="num">retry</th>
                  <th class="num">archived</th>
                </tr>
              </thead>
              <tbody>
                {stats.queues.length === 0 ? (
                  <tr>
                    <td colSpan={6} class="muted">
                      No queue yet: nothing was sent.
                    </td>
                  </tr>
                ) : null}
                {stats.queues.map((q) => (
                  <tr>
                    <td>
                      {q.queue} {q.paused ? <span class="badge warn">paused</span> : null}
                    </td>
                    <td class="num">{q.pending}</td>
                    <td class="num">{q.active}</td>
                    <td class="num">{q.scheduled}</td>
                    <td class="num">{q.retry}</td>
                    <td class="num">{q.archived}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          ) : (
            <Empty>Loading…</Empty>
          )}
        </Card>
        <Card title="Sending">
          <Sending ready={ready} admin />
        </Card>
      </div>
      <Senders stats={stats} />
    </div>
  );
}

export const page = { path: '/', title: 'Overview', order: 10, component: Overview };
