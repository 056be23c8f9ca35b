import { useState } from 'preact/hooks';
import { del, get, post, qs } from '../api.js';
import { href, navigate } from '../router.js';
import { Card, Empty, ErrorBox, STATUS_COLORS, Status, Time, ago, duration, gap, usePoll } from '../ui.jsx';

const STATUSES = ['scheduled', 'queued', 'sending', 'retrying', 'submitted', 'enqueued', 'sent', 'delivered', 'read', 'failed', 'dead', 'expired', 'canceled'];
// What a message may wait for, its status unchanged.
const WAIT_REASONS = ['sender_rate', 'pair_rate', 'daily_limit', 'circuit_open', 'throttled', 'paused', 'conversation_order', 'marketing_capped', 'template_paused'];
// Statuses after which nothing more happens on its own.
const SETTLED = ['read', 'dead', 'expired', 'canceled', 'failed'];

export function MessageTable({ messages, showBatch = true }) {
  if (!messages.length) return <Empty>No messages match.</Empty>;
  return (
    <table class="messages">
      <thead>
        <tr>
          <th>id</th>
          <th>recipient</th>
          <th>status</th>
          <th>type</th>
          {showBatch ? <th>campaign</th> : null}
          <th>attempts</th>
          <th>updated</th>
        </tr>
      </thead>
      <tbody>
        {messages.map((m) => (
          <tr data-id={m.id}>
            <td>
              <a href={href('/messages/' + m.id)} class="mono">
                {m.id}
              </a>
            </td>
            <td class="mono">{m.destination}</td>
            <td>
              <Status status={m.status} />
              {m.waiting ? (
                <span class="muted small" title={m.waiting.until ? 'until ' + m.waiting.until : 'until unknown'}>
                  {' '}waiting: {m.waiting.reason}
                </span>
              ) : null}
            </td>
            <td>{m.type}</td>
            {showBatch ? <td>{m.batch_id ? <a href={href('/campaigns/' + encodeURIComponent(m.batch_id))}>{m.batch_id}</a> : <span class="muted">–</span>}</td> : null}
            <td class="num">{m.attempts}</td>
            <td title={m.updated_at}>{ago(m.updated_at)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function Search({ search }) {
  const params = new URLSearchParams(search);
  const [form, setForm] = useState({
    id: '',
    destination: params.get('destination') || '',
    batch_id: params.get('batch_id') || '',
    status: params.get('status') || '',
    waiting: params.get('waiting') || '',
    tenant: params.get('tenant') || '',
  });
  const [cursor, setCursor] = useState('');
  const query = {
    destination: params.get('destination') || '',
    batch_id: params.get('batch_id') || '',
    status: params.get('status') || '',
    waiting: params.get('waiting') || '',
    tenant: params.get('tenant') || '',
  };
  // An admin key lists any tenant's messages (tenant default's without
  // one); a tenant key its own alone.
  const [who] = usePoll(() => get('/v1/stats?minutes=1'), 0, []);
  const active = query.destination || query.batch_id || query.waiting;
  const [page, err] = usePoll(
    () => (active ? get('/v1/messages' + qs({ ...query, cursor, limit: 50 })) : Promise.resolve(null)),
    active ? 5000 : 0,
    [search, cursor],
  );
  const set = (k) => (e) => setForm({ ...form, [k]: e.target.value });
  const submit = (e) => {
    e.preventDefault();
    setCursor('');
    if (form.id.trim()) {
      navigate('/messages/' + encodeURIComponent(form.id.trim()));
      return;
    }
    navigate(
      '/messages' +
        qs({ destination: form.destination.trim(), batch_id: form.batch_id.trim(), status: form.status, waiting: form.waiting, tenant: form.tenant.trim() }),
    );
  };
  return (
    <div class="page">
      <h1>Messages</h1>
      <Card>
        <form class="search" onSubmit={submit}>
          <label>
            Message id
            <input name="id" value={form.id} onInput={set('id')} placeholder="01J…" />
          </label>
          <span class="or">or</span>
          <label>
            Recipient
            <input name="destination" value={form.destination} onInput={set('destination')} placeholder="96996999699" />
          </label>
          <label>
            Campaign (batch id)
            <input name="batch_id" value={form.batch_id} onInput={set('batch_id')} placeholder="black-friday-2026" />
          </label>
          <label>
            Status
            <select name="status" value={form.status} onChange={set('status')}>
              <option value="">any</option>
              {STATUSES.map((s) => (
                <option value={s}>{s}</option>
              ))}
            </select>
          </label>
          <label>
            Waiting for
            <select name="waiting" value={form.waiting} onChange={set('waiting')}>
              <option value="">–</option>
              {WAIT_REASONS.map((r) => (
                <option value={r}>{r}</option>
              ))}
            </select>
          </label>
          {who?.admin ? (
            <label>
              Tenant
              <input name="tenant" value={form.tenant} onInput={set('tenant')} placeholder="default" />
            </label>
          ) : null}
          <button type="submit">Search</button>
        </form>
        <p class="muted small">
          Find one message by its id, or list a recipient's or a campaign's messages, newest first, or those waiting for a reason (a wait keeps the status); a status narrows them
          {who?.admin ? ', and a tenant names whose (tenant default without one: each tenant has its own)' : ''}. Every dead letter is under{' '}
          <a href={href('/dead-letters')}>Dead letters</a>.
        </p>
      </Card>
      <ErrorBox error={err} />
      {active ? (
        <Card title="Results">
          {page ? <MessageTable messages={page.messages} /> : <Empty>Loading…</Empty>}
          {page?.next_cursor ? (
            <div class="pager">
              <button class="secondary" onClick={() => setCursor(page.next_cursor)}>
                Older messages
              </button>
            </div>
          ) : null}
        </Card>
      ) : null}
    </div>
  );
}

function Timeline({ record }) {
  const h = record.history || [];
  return (
    <ol class="timeline" data-testid="timeline">
      {h.map((e, i) => (
        <li data-status={e.status}>
          <span class="dot" style={{ borderColor: STATUS_COLORS[e.status] || '#999' }} />
          <div class="when">
            <Time at={e.at} />
            {i > 0 ? <span class="gap">{gap(h[i - 1].at, e.at)}</span> : null}
          </div>
          <div class="what">
            <Status status={e.status} />
            {e.note ? <span class="note">{e.note}</span> : null}
          </div>
        </li>
      ))}
    </ol>
  );
}

function Message({ id }) {
  const [record, err, reload] = usePoll(() => get('/v1/messages/' + encodeURIComponent(id)), 2000, [id]);
  const [actionErr, setActionErr] = useState(null);
  const act = async (f) => {
    setActionErr(null);
    try {
      await f();
      await reload();
    } catch (e) {
      setActionErr(e);
    }
  };
  if (err && !record) {
    return (
      <div class="page">
        <h1>Message</h1>
        <ErrorBox error={err.status === 404 ? { message: 'No message has the id ' + id + ' (or its record expired).' } : err} />
      </div>
    );
  }
  if (!record) return <div class="page"><Empty>Loading…</Empty></div>;
  const pending = ['scheduled', 'queued', 'retrying'].includes(record.status);
  return (
    <div class="page">
      <h1>
        Message <span class="mono">{record.id}</span> <Status status={record.status} />
      </h1>
      <ErrorBox error={actionErr} />
      <div class="two">
        <Card
          title="Timeline"
          actions={
            <>
              {pending ? (
                <button class="danger" onClick={() => act(() => del('/v1/messages/' + record.id))}>
                  Cancel
                </button>
              ) : null}
              {record.status === 'dead' ? (
                <button onClick={() => act(() => post('/v1/dead-letters/retry', { ids: [record.id] }))}>Retry</button>
              ) : null}
            </>
          }
        >
          <Timeline record={record} />
          {record.history?.length > 1 ? (
            <p class="muted small total">
              {record.status} {duration(record.created_at, record.history[record.history.length - 1].at)} after it was accepted
              {record.attempts ? `, in ${record.attempts} send attempt${record.attempts > 1 ? 's' : ''}` : ''}.
            </p>
          ) : null}
          {!SETTLED.includes(record.status) ? <p class="muted small">Updating as it moves…</p> : null}
        </Card>
        <div>
          {record.waiting ? (
            <Card title="Waiting">
              <dl data-testid="waiting">
                <dt>Reason</dt>
                <dd>{record.waiting.reason}</dd>
                <dt>Since</dt>
                <dd>
                  <Time at={record.waiting.since} />
                </dd>
                <dt>Until</dt>
                <dd>{record.waiting.until ? <Time at={record.waiting.until} /> : 'unknown'}</dd>
              </dl>
            </Card>
          ) : null}
          {record.last_error ? (
            <Card title="Last error" class="bad">
              <dl>
                <dt>Class</dt>
                <dd>{record.last_error.class}</dd>
                <dt>Code</dt>
                <dd>
                  <code>{record.last_error.code}</code>
                </dd>
                <dt>Message</dt>
                <dd>{record.last_error.message}</dd>
                <dt>At</dt>
                <dd>
                  <Time at={record.last_error.at} />
                </dd>
              </dl>
            </Card>
          ) : null}
          <Card title="Details">
            <dl>
              <dt>Recipient</dt>
              <dd class="mono">
                <a href={href('/messages' + qs({ destination: record.destination }))}>{record.destination}</a>
              </dd>
              <dt>Type</dt>
              <dd>{record.type}</dd>
              <dt>Priority</dt>
              <dd>{record.priority}</dd>
              <dt>Attempts</dt>
              <dd>{record.attempts}</dd>
              <dt>Campaign</dt>
              <dd>{record.batch_id ? <a href={href('/campaigns/' + encodeURIComponent(record.batch_id))}>{record.batch_id}</a> : '–'}</dd>
              <dt>Created</dt>
              <dd>
                <Time at={record.created_at} />
              </dd>
              {record.send_at ? (
                <>
                  <dt>Send at</dt>
                  <dd>
                    <Time at={record.send_at} />
                  </dd>
                </>
              ) : null}
              {record.expires_at ? (
                <>
                  <dt>Expires at</dt>
                  <dd>
                    <Time at={record.expires_at} />
                  </dd>
                </>
              ) : null}
              <dt>Provider id</dt>
              <dd class="mono">{record.provider_message_id || '–'}</dd>
              <dt>WhatsApp id</dt>
              <dd class="mono">{record.whatsapp_message_id || '–'}</dd>
              <dt>Callbacks</dt>
              <dd>{record.callback_url ? <span class="mono">{record.callback_url}</span> : 'none'}</dd>
              {record.idempotency_key ? (
                <>
                  <dt>Idempotency key</dt>
                  <dd class="mono">{record.idempotency_key}</dd>
                </>
              ) : null}
              {record.metadata && Object.keys(record.metadata).length ? (
                <>
                  <dt>Metadata</dt>
                  <dd>
                    {Object.entries(record.metadata).map(([k, v]) => (
                      <div>
                        <span class="muted">{k}</span> {v}
                      </div>
                    ))}
                  </dd>
                </>
              ) : null}
            </dl>
          </Card>
        </div>
      </div>
    </div>
  );
}

function Messages({ rest, search }) {
  return rest ? <Message id={rest} /> : <Search search={search} />;
}

export const page = { path: '/messages', title: 'Messages', order: 20, component: Messages };
