import { useEffect, useRef, useState } from 'preact/hooks';

// Shared pieces of the pages: status badges, times, errors, polling.

export const STATUS_COLORS = {
  scheduled: '#8b93a7',
  queued: '#6c7ae0',
  sending: '#4aa3df',
  retrying: '#e5a13a',
  submitted: '#3bb4c1',
  enqueued: '#5fb6a8',
  sent: '#52b788',
  delivered: '#2d9d5c',
  read: '#1b7a43',
  failed: '#e0603a',
  dead: '#c0392b',
  expired: '#a39e93',
  canceled: '#7f8c8d',
};

export function Status({ status }) {
  return (
    <span class="badge" style={{ background: STATUS_COLORS[status] || '#999' }} data-status={status}>
      {status}
    </span>
  );
}

const fmt = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
});

export function Time({ at }) {
  if (!at) return <span class="muted">–</span>;
  const d = new Date(at);
  return <time dateTime={at} title={at}>{fmt.format(d)}</time>;
}

// ago says how long before now t was, in words.
export function ago(t, now = Date.now()) {
  const s = Math.round((now - new Date(t).getTime()) / 1000);
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

// duration says the time between two instants briefly: "1.2s", "3m 4s".
export function duration(from, to) {
  const ms = new Date(to).getTime() - new Date(from).getTime();
  if (ms < 1000) return `${ms}ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)}s`;
  const m = Math.floor(ms / 60000);
  if (m < 60) return `${m}m ${Math.round((ms % 60000) / 1000)}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

// gap says how long after the entry before an entry came: "+1.2s", or
// "−600ms" when a webhook's own time (the provider's clock, often in whole
// seconds) is earlier than chatq's previous entry.
export function gap(from, to) {
  return new Date(to) < new Date(from) ? `−${duration(to, from)}` : `+${duration(from, to)}`;
}

export function ErrorBox({ error }) {
  if (!error) return null;
  return (
    <div class="error" role="alert">
      {error.field ? <b>{error.field}: </b> : null}
      {error.message}
    </div>
  );
}

// usePoll calls load now and every ms milliseconds while the page is
// shown; it returns [data, error, reload].
export function usePoll(load, ms, deps = []) {
  const [state, setState] = useState({ data: null, error: null });
  const seq = useRef(0);
  const run = async () => {
    const n = ++seq.current;
    try {
      const data = await load();
      if (n === seq.current) setState({ data, error: null });
    } catch (error) {
      if (n === seq.current) setState((s) => ({ data: s.data, error }));
    }
  };
  useEffect(() => {
    setState({ data: null, error: null });
    run();
    if (!ms) return undefined;
    const t = setInterval(run, ms);
    return () => {
      clearInterval(t);
      seq.current++;
    };
  }, deps);
  return [state.data, state.error, run];
}

export function Empty({ children }) {
  return <div class="empty">{children}</div>;
}

export function Card({ title, actions, children, class: cls }) {
  return (
    <section class={'card ' + (cls || '')}>
      {title || actions ? (
        <header>
          <h2>{title}</h2>
          <div class="actions">{actions}</div>
        </header>
      ) : null}
      {children}
    </section>
  );
}
