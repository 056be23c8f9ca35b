import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, clearKey, getKey, setKey } from './api.js';
import { href, navigate, useLocation } from './router.js';
import './style.css';

// Every file in pages/ is a page: it exports `page` = {path, title, order,
// component}. Adding a page to the console is adding one file there.
const pages = Object.values(import.meta.glob('./pages/*.jsx', { eager: true }))
  .map((m) => m.page)
  .filter(Boolean)
  .sort((a, b) => a.order - b.order);

// route finds the page whose path is the longest prefix of path; the rest
// of the path (such as a message id) goes to the page.
function route(path) {
  let best = null;
  for (const p of pages) {
    const base = p.path === '/' ? '/' : p.path;
    const hit = p.path === '/' ? path === '/' : path === base || path.startsWith(base + '/');
    if (hit && (!best || base.length > best.path.length)) best = p;
  }
  if (!best) return { page: null, rest: '' };
  const rest = best.path === '/' ? '' : decodeURIComponent(path.slice(best.path.length + 1));
  return { page: best, rest };
}

function SignIn({ onSignedIn }) {
  const [key, setValue] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      // Any authenticated route tells whether the key is good.
      await api('GET', '/v1/batches?limit=1', undefined, key.trim());
      setKey(key.trim());
      onSignedIn();
    } catch (err) {
      setError(err.status === 401 ? 'This key is not one of chatq\u2019s API keys.' : err.message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="signin">
      <form onSubmit={submit} class="card">
        <h1>
          <span class="logo">chatq</span> console
        </h1>
        <p class="muted">
          Sign in with an API key: an admin key (one of CHATQ_API_KEYS) sees everything, a tenant key its tenant's messages alone. The key
          stays in this browser tab only.
        </p>
        <label>
          API key
          <input type="password" name="key" autoComplete="off" value={key} onInput={(e) => setValue(e.target.value)} required autoFocus />
        </label>
        {error ? <div class="error" role="alert">{error}</div> : null}
        <button type="submit" disabled={busy || !key.trim()}>
          {busy ? 'Checking…' : 'Sign in'}
        </button>
      </form>
    </div>
  );
}

// Who says whose key the console signed in with: an admin's, or a
// tenant's (GET /v1/stats tells).
function Who() {
  const [who, setWho] = useState(null);
  useEffect(() => {
    api('GET', '/v1/stats?minutes=1')
      .then((s) => setWho(s.admin ? 'admin key' : 'tenant ' + s.tenant))
      .catch(() => setWho(null));
  }, []);
  return who ? (
    <div class="who" data-testid="who">
      {who}
    </div>
  ) : null;
}

function App() {
  const [signedIn, setSignedIn] = useState(!!getKey());
  const loc = useLocation();
  useEffect(() => {
    const out = () => setSignedIn(false);
    window.addEventListener('chatq:signed-out', out);
    return () => window.removeEventListener('chatq:signed-out', out);
  }, []);
  if (!signedIn) return <SignIn onSignedIn={() => setSignedIn(true)} />;
  const { page, rest } = route(loc.path);
  const Page = page?.component;
  return (
    <div class="layout">
      <nav class="sidebar">
        <a class="brand" href={href('/')}>
          <span class="logo">chatq</span>
        </a>
        {pages.map((p) => (
          <a href={href(p.path)} class={page === p ? 'active' : ''} aria-current={page === p ? 'page' : undefined}>
            {p.title}
          </a>
        ))}
        <div class="spacer" />
        <Who />
        <button
          class="link"
          onClick={() => {
            clearKey();
            setSignedIn(false);
            navigate('/');
          }}
        >
          Sign out
        </button>
      </nav>
      <main>{Page ? <Page rest={rest} search={loc.search} /> : <p>No such page. <a href={href('/')}>Overview</a></p>}</main>
    </div>
  );
}

render(<App />, document.getElementById('app'));
