import { useState } from 'preact/hooks';
import { del, get, qs } from '../api.js';
import { href } from '../router.js';
import { Card, Empty, ErrorBox, STATUS_COLORS, ago, usePoll } from '../ui.jsx';
import { MessageTable } from './messages.jsx';

// funnel turns a campaign's counts by status into its stages: how many
// wait, were accepted upstream, delivered, read; and how many failed or
// died. Each stage counts the messages that reached it.
export function funnel(c) {
  const n = (...ss) => ss.reduce((a, s) => a + (c[s] || 0), 0);
  return [
    { stage: 'queued', n: n('scheduled', 'queued', 'sending', 'retrying'), color: STATUS_COLORS.queued, hint: 'waiting to be sent' },
    { stage: 'submitted', n: n('submitted', 'enqueued', 'sent', 'delivered', 'read', 'failed'), color: STATUS_COLORS.submitted, hint: 'accepted by ChatArchitect' },
    { stage: 'delivered', n: n('delivered', 'read'), color: STATUS_COLORS.delivered, hint: 'on the phone' },
    { stage: 'read', n: n('read'), color: STATUS_COLORS.read, hint: 'read by the recipient' },
    { stage: 'failed', n: n('failed'), color: STATUS_COLORS.failed, hint: 'delivery failed' },
    { stage: 'dead', n: n('dead'), color: STATUS_COLORS.dead, hint: 'chatq gave up' },
  ];
}

function Funnel({ counts, total }) {
  return (
    <div class="funnel" data-testid="funnel">
      {funnel(counts).map((s) => {
        const pct = total ? Math.round((s.n / total) * 1000) / 10 : 0;
        return (
          <div class="stage" data-stage={s.stage}>
            <div class="label">
              <b>{s.stage}</b> <span class="muted small">{s.hint}</span>
            </div>
            <div class="bar">
              <div class="fill" style={{ width: pct + '%', background: s.color }} />
            </div>
            <div class="count">
              <span class="n">{s.n.toLocaleString()}</span> <span class="muted small">{pct}%</span>
            </div>
          </div>
        );
      })}
    </div>
  );
}

function Campaign({ id }) {
  const [data, err, reload] = usePoll(
    async () => {
      const [b, list] = await Promise.all([
        get('/v1/batches/' + encodeURIComponent(id)),
        get('/v1/messages' + qs({ batch_id: id, limit: 50 })),
      ]);
      return { ...b, messages: list.messages };
    },
    2000,
    [id],
  );
  const [result, setResult] = useState(null);
  const [cancelErr, setCancelErr] = useState(null);
  const cancel = async () => {
    if (!confirm('Cancel every message of ' + id + ' that is still waiting?')) return;
    setCancelErr(null);
    try {
      setResult(await del('/v1/messages' + qs({ batch_id: id })));
      await reload();
    } catch (e) {
      setCancelErr(e);
    }
  };
  if (err && !data) {
    return (
      <div class="page">
        <h1>Campaign {id}</h1>
        <ErrorBox error={err.status === 404 ? { message: 'No messages have the batch id ' + id + '.' } : err} />
      </div>
    );
  }
  if (!data) return <div class="page"><Empty>Loading…</Empty></div>;
  const c = data.counts;
  const waiting = (c.scheduled || 0) + (c.queued || 0) + (c.retrying || 0);
  return (
    <div class="page">
      <h1>
        Campaign <span class="mono">{id}</span>
      </h1>
      <ErrorBox error={cancelErr} />
      {result ? (
        <div class="notice">
          Canceled {result.canceled}; {result.too_late} were already on their way or ended.
        </div>
      ) : null}
      <Card
        title={data.total.toLocaleString() + ' messages'}
        actions={
          <button class="danger" onClick={cancel} disabled={!waiting}>
            Cancel what waits ({waiting})
          </button>
        }
      >
        <Funnel counts={c} total={data.total} />
        <p class="muted small">
          Also: {c.expired || 0} expired, {c.canceled || 0} canceled. Updated every two seconds.
        </p>
      </Card>
      <Card title="Latest messages" actions={<a href={href('/messages' + qs({ batch_id: id }))}>Search this campaign</a>}>
        <MessageTable messages={data.messages} showBatch={false} />
      </Card>
    </div>
  );
}

function CampaignList() {
  const [cursor, setCursor] = useState('');
  const [data, err] = usePoll(
    async () => {
      const page = await get('/v1/batches' + qs({ limit: 20, cursor }));
      const counts = await Promise.all(page.batches.map((b) => get('/v1/batches/' + encodeURIComponent(b.batch_id)).catch(() => null)));
      return { ...page, batches: page.batches.map((b, i) => ({ ...b, ...(counts[i] || { total: 0, counts: {} }) })) };
    },
    5000,
    [cursor],
  );
  return (
    <div class="page">
      <h1>Campaigns</h1>
      <p class="muted">
        Messages that share a <code>batch_id</code>. <a href={href('/new-campaign')}>Start one from a CSV file.</a>
      </p>
      <ErrorBox error={err} />
      <Card>
        {!data ? (
          <Empty>Loading…</Empty>
        ) : data.batches.length === 0 ? (
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
              {data.batches.map((b) => (
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
        {data?.next_cursor ? (
          <div class="pager">
            <button class="secondary" onClick={() => setCursor(data.next_cursor)}>
              Older campaigns
            </button>
          </div>
        ) : null}
      </Card>
    </div>
  );
}

function Campaigns({ rest }) {
  return rest ? <Campaign id={rest} /> : <CampaignList />;
}

export const page = { path: '/campaigns', title: 'Campaigns', order: 30, component: Campaigns };
