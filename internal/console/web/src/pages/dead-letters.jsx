import { useState } from 'preact/hooks';
import { get, post, qs } from '../api.js';
import { href, navigate } from '../router.js';
import { Card, Empty, ErrorBox, Status, ago, usePoll } from '../ui.jsx';

const FILTERS = [
  ['class', 'Class', 'retryable, permanent, policy…'],
  ['code', 'Code', '131026'],
  ['batch_id', 'Campaign', 'black-friday-2026'],
  ['queue', 'Queue', 'transactional or bulk'],
  ['newer_than', 'Died less than … ago', '2h'],
  ['older_than', 'Died more than … ago', '10m'],
];

function DeadLetters({ search }) {
  const params = new URLSearchParams(search);
  const filter = Object.fromEntries(FILTERS.map(([k]) => [k, params.get(k) || '']));
  // An admin key reads any tenant's dead letters (tenant default's
  // without one); a tenant key its own alone.
  const tenant = params.get('tenant') || '';
  const [who] = usePoll(() => get('/v1/stats?minutes=1'), 0, []);
  const [form, setForm] = useState({ ...filter, tenant });
  const [cursor, setCursor] = useState('');
  const [selected, setSelected] = useState(new Set());
  const [result, setResult] = useState(null);
  const [actionErr, setActionErr] = useState(null);
  const [page, err, reload] = usePoll(() => get('/v1/dead-letters' + qs({ ...filter, tenant, cursor, limit: 50 })), 5000, [search, cursor]);
  const apply = (e) => {
    e.preventDefault();
    setCursor('');
    setSelected(new Set());
    navigate('/dead-letters' + qs(Object.fromEntries(Object.entries(form).map(([k, v]) => [k, v.trim()]))));
  };
  const toggle = (id) => {
    const s = new Set(selected);
    s.has(id) ? s.delete(id) : s.add(id);
    setSelected(s);
  };
  const retry = async (body, what) => {
    if (!confirm(`Send ${what} again?`)) return;
    setActionErr(null);
    try {
      // Within the tenant the page lists: an admin key's retry without
      // one would act on every tenant's.
      setResult(await post('/v1/dead-letters/retry' + qs({ tenant: who?.admin ? tenant || 'default' : '' }), body));
      setSelected(new Set());
      await reload();
    } catch (e) {
      setActionErr(e);
    }
  };
  const letters = page?.dead_letters || [];
  const filtered = Object.values(filter).some((v) => v);
  const matching = Object.fromEntries(Object.entries(filter).filter(([, v]) => v));
  return (
    <div class="page">
      <h1>Dead letters</h1>
      <p class="muted">Messages chatq gave up on: a permanent error, a policy refusal, or retries exhausted. A retry sends them again with a fresh retry budget.</p>
      <Card>
        <form class="search grid" onSubmit={apply}>
          {FILTERS.map(([k, label, ph]) => (
            <label>
              {label}
              <input name={k} value={form[k]} placeholder={ph} onInput={(e) => setForm({ ...form, [k]: e.target.value })} />
            </label>
          ))}
          {who?.admin ? (
            <label>
              Tenant
              <input name="tenant" value={form.tenant} placeholder="default" onInput={(e) => setForm({ ...form, tenant: e.target.value })} />
            </label>
          ) : null}
          <div class="filter-button">
            <button type="submit">Filter</button>
          </div>
        </form>
      </Card>
      <ErrorBox error={err || actionErr} />
      {result ? (
        <div class="notice ok" data-testid="retried">
          Retried {result.retried}
          {result.not_dead ? `; ${result.not_dead} were no longer dead` : ''}
          {result.not_found ? `; ${result.not_found} not found` : ''}.
        </div>
      ) : null}
      <Card
        title={page ? `${letters.length}${page.next_cursor ? '+' : ''} dead letters${filtered ? ' matching' : ''}` : 'Dead letters'}
        actions={
          <>
            <button onClick={() => retry({ ids: [...selected] }, `${selected.size} selected dead letters`)} disabled={!selected.size}>
              Retry selected ({selected.size})
            </button>
            <button class="secondary" onClick={() => retry({ filter: matching }, filtered ? 'every dead letter matching the filter' : 'every dead letter')} disabled={!letters.length}>
              Retry all {filtered ? 'matching' : ''}
            </button>
          </>
        }
      >
        {!page ? (
          <Empty>Loading…</Empty>
        ) : !letters.length ? (
          <Empty>No dead letters{filtered ? ' match' : ''}.</Empty>
        ) : (
          <table>
            <thead>
              <tr>
                <th>
                  <input
                    type="checkbox"
                    aria-label="select all"
                    checked={selected.size === letters.length}
                    onChange={(e) => setSelected(new Set(e.target.checked ? letters.map((d) => d.id) : []))}
                  />
                </th>
                <th>id</th>
                <th>recipient</th>
                <th>status</th>
                <th>error</th>
                <th>campaign</th>
                <th>died</th>
              </tr>
            </thead>
            <tbody>
              {letters.map((d) => (
                <tr data-id={d.id}>
                  <td>
                    <input type="checkbox" aria-label={'select ' + d.id} checked={selected.has(d.id)} onChange={() => toggle(d.id)} />
                  </td>
                  <td>
                    <a href={href('/messages/' + d.id)} class="mono">
                      {d.id}
                    </a>
                  </td>
                  <td class="mono">{d.destination}</td>
                  <td>
                    <Status status={d.status} />
                  </td>
                  <td>
                    {d.last_error ? (
                      <>
                        <span class="badge plain">{d.last_error.class}</span> <code>{d.last_error.code}</code> {d.last_error.message}
                      </>
                    ) : (
                      '–'
                    )}
                  </td>
                  <td>{d.batch_id || <span class="muted">–</span>}</td>
                  <td title={d.died_at}>{ago(d.died_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        {page?.next_cursor ? (
          <div class="pager">
            <button class="secondary" onClick={() => setCursor(page.next_cursor)}>
              Older dead letters
            </button>
          </div>
        ) : null}
      </Card>
    </div>
  );
}

export const page = { path: '/dead-letters', title: 'Dead letters', order: 50, component: DeadLetters };
