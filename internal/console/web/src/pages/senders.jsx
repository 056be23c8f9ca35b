import { useState } from 'preact/hooks';
import { get, post } from '../api.js';
import { Card, Empty, ErrorBox, usePoll } from '../ui.jsx';

// A sender's live state (the API's `state`): active and paused come from
// the registry, circuit_open and throttled from the sender's flow control.
const STATES = {
  active: { color: '#2d9d5c', hint: 'sending' },
  paused: { color: '#b7791f', hint: 'paused by an operator: its messages wait' },
  circuit_open: { color: '#c0392b', hint: 'ChatArchitect refused it: sending stopped until a probe succeeds' },
  throttled: { color: '#e5a13a', hint: 'slowed down after a 429' },
};

export function SenderState({ state }) {
  const s = STATES[state] || { color: '#8b93a7', hint: '' };
  return (
    <span class="badge" style={{ background: s.color }} title={s.hint} data-state={state}>
      {state.replace('_', ' ')}
    </span>
  );
}

// limits says a sender's limits in a few words.
const rate = (x) => `${x.rate_per_second}/s, burst ${x.rate_burst}`;
const pair = (x) => (x.pair_interval === '0s' ? 'off' : `1 per ${x.pair_interval}, burst ${x.pair_burst}`);
const daily = (x) => (x.daily_recipient_limit ? x.daily_recipient_limit.toLocaleString() + ' recipients' : 'off');

// SenderTable lists senders with their state and limits; with actions, a
// pause or resume button on each one that may be changed.
export function SenderTable({ senders, actions, showTenant = true }) {
  if (!senders.length) return <Empty>No senders.</Empty>;
  return (
    <table class="senders">
      <thead>
        <tr>
          <th>number</th>
          <th>state</th>
          {showTenant ? <th>tenant</th> : null}
          <th>portfolio</th>
          <th>rate</th>
          <th>per recipient</th>
          <th>daily limit</th>
          {actions ? <th /> : null}
        </tr>
      </thead>
      <tbody>
        {senders.map((x) => (
          <tr data-number={x.number}>
            <td class="mono">
              {x.number} {x.default ? <span class="badge plain">default</span> : null}
            </td>
            <td>
              <SenderState state={x.state} />
            </td>
            {showTenant ? <td>{x.tenant}</td> : null}
            <td class="mono">{x.portfolio}</td>
            <td>{rate(x)}</td>
            <td>{pair(x)}</td>
            <td>{daily(x)}</td>
            {actions ? <td class="num">{actions(x)}</td> : null}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

// OwnSenders is what a tenant key sees: the senders are the deployment's
// to manage, and GET /v1/stats shows the tenant's own, read only.
function OwnSenders() {
  const [stats, err] = usePoll(() => get('/v1/stats?minutes=1'), 5000);
  return (
    <>
      <div class="notice" data-testid="managed-by-admin">
        Senders are managed by an administrator: adding, changing, pausing and resuming them needs an admin key. These are your tenant's
        senders{stats?.tenant ? <> (tenant <b>{stats.tenant}</b>)</> : null} and their state.
      </div>
      <ErrorBox error={err} />
      <Card title="Your senders">{stats ? <SenderTable senders={stats.senders} showTenant={false} /> : <Empty>Loading…</Empty>}</Card>
    </>
  );
}

function Senders() {
  const [tenant, setTenant] = useState('');
  const [data, err, reload] = usePoll(() => get('/v1/senders'), 3000);
  const [busy, setBusy] = useState('');
  const [done, setDone] = useState(null);
  const [actionErr, setActionErr] = useState(null);
  if (err?.status === 403) {
    return (
      <div class="page">
        <h1>Senders</h1>
        <OwnSenders />
      </div>
    );
  }
  const change = async (x, action) => {
    if (action === 'pause' && !confirm(`Pause ${x.number}? Its messages wait until it is resumed.`)) return;
    setActionErr(null);
    setBusy(x.number);
    try {
      const v = await post(`/v1/senders/${encodeURIComponent(x.number)}/${action}`);
      setDone({ number: v.number, state: v.state });
      await reload();
    } catch (e) {
      setActionErr(e);
    } finally {
      setBusy('');
    }
  };
  const all = data?.senders || [];
  const tenants = [...new Set(all.map((x) => x.tenant))].sort();
  const shown = tenant ? all.filter((x) => x.tenant === tenant) : all;
  const actions = (x) => {
    if (x.source === 'environment') {
      return <span class="muted small" title="CHATQ_CA_SOURCE and the CHATQ_CA_ credentials define it">set in the environment</span>;
    }
    const paused = x.state === 'paused';
    return (
      <button class={paused ? '' : 'secondary'} disabled={busy === x.number} onClick={() => change(x, paused ? 'resume' : 'pause')}>
        {paused ? 'Resume' : 'Pause'}
      </button>
    );
  };
  return (
    <div class="page">
      <h1>Senders</h1>
      <p class="muted">
        The business numbers chatq sends from, with their state and limits. A paused sender sends nothing: its messages wait, and go when it is
        resumed. Senders are added and changed with <code>POST</code> and <code>PATCH /v1/senders</code> or <code>chatq senders</code>.
      </p>
      <ErrorBox error={err || actionErr} />
      {done ? (
        <div class="notice ok" data-testid="sender-changed">
          {done.number} is now {done.state}.
        </div>
      ) : null}
      <Card
        title={data ? `${shown.length} senders` : 'Senders'}
        actions={
          tenants.length > 1 ? (
            <select name="tenant" value={tenant} onChange={(e) => setTenant(e.target.value)} aria-label="tenant">
              <option value="">every tenant</option>
              {tenants.map((t) => (
                <option value={t}>{t}</option>
              ))}
            </select>
          ) : null
        }
      >
        {data ? <SenderTable senders={shown} actions={actions} /> : <Empty>Loading…</Empty>}
      </Card>
    </div>
  );
}

export const page = { path: '/senders', title: 'Senders', order: 60, component: Senders };
