import { useEffect, useState } from 'preact/hooks';
import { get, post } from '../api.js';
import { parseCampaign } from '../csv.js';
import { href } from '../router.js';
import { Card, Empty, ErrorBox } from '../ui.jsx';

const CHUNK = 1000; // POST /v1/messages/batch takes up to 1000 messages

const defaultBatch = () => 'campaign-' + new Date().toISOString().slice(0, 16).replace(/[-:T]/g, '');

function message(row, f) {
  return {
    channel: 'whatsapp',
    destination: row.destination,
    payload: { type: 'template', template: { elementName: f.template, languageCode: f.language, params: row.params } },
    priority: f.priority,
    batch_id: f.batch,
    // A retried upload sends nothing twice: the same row has the same key.
    idempotency_key: `${f.batch}:line-${row.line}`,
  };
}

async function inChunks(items, f, progress) {
  const out = [];
  for (let i = 0; i < items.length; i += CHUNK) {
    const res = await f(items.slice(i, i + CHUNK));
    res.results.forEach((r) => out.push(r));
    progress(Math.min(i + CHUNK, items.length));
  }
  return out;
}

function NewCampaign() {
  const [f, setF] = useState({ template: '', language: '', batch: defaultBatch(), priority: 'bulk' });
  const [templates, setTemplates] = useState([]);
  const [file, setFile] = useState(null); // {name, text}
  const [parsed, setParsed] = useState(null);
  const [checks, setChecks] = useState(null); // per row: {ok, error}
  const [busy, setBusy] = useState('');
  const [err, setErr] = useState(null);
  const [sent, setSent] = useState(null);

  useEffect(() => {
    get('/v1/templates')
      .then((t) => setTemplates((t.templates || []).filter((x) => x.status === 'APPROVED')))
      .catch(() => setTemplates([]));
  }, []);
  // Any change invalidates the check.
  useEffect(() => {
    setChecks(null);
    setSent(null);
    setParsed(file ? parseCampaign(file.text) : null);
  }, [file, f.template, f.language, f.batch, f.priority]);

  const set = (k) => (e) => setF({ ...f, [k]: e.target.value });
  const pick = (e) => {
    const t = templates.find((x) => x.elementName + '|' + x.languageCode === e.target.value);
    if (t) setF({ ...f, template: t.elementName, language: t.languageCode });
  };
  const load = async (e) => {
    const fl = e.target.files[0];
    setFile(fl ? { name: fl.name, text: await fl.text() } : null);
  };
  const rows = parsed?.rows || [];

  const check = async () => {
    setErr(null);
    setBusy('Checking');
    try {
      const res = await inChunks(rows, (part) => post('/v1/messages/validate', { messages: part.map((r) => message(r, f)) }), (n) => setBusy(`Checking ${n} of ${rows.length}`));
      setChecks(res.map((r) => ({ ok: r.valid, error: r.error })));
    } catch (e) {
      setErr(e);
    } finally {
      setBusy('');
    }
  };
  const good = checks ? rows.filter((_, i) => checks[i].ok) : [];
  const bad = checks ? checks.filter((c) => !c.ok).length : 0;
  const send = async () => {
    setErr(null);
    setBusy('Sending');
    try {
      const res = await inChunks(good, (part) => post('/v1/messages/batch', { messages: part.map((r) => message(r, f)) }), (n) => setBusy(`Sending ${n} of ${good.length}`));
      const failed = [];
      res.forEach((r, i) => r.error && failed.push({ line: good[i].line, error: r.error }));
      setSent({ queued: res.length - failed.length, failed });
    } catch (e) {
      setErr(e);
    } finally {
      setBusy('');
    }
  };
  const ready = f.template && f.language && f.batch && rows.length && !parsed?.error;

  return (
    <div class="page">
      <h1>New campaign</h1>
      <p class="muted">
        A template message to every row of a CSV file: a <code>destination</code> column, then one column per template parameter (or columns named{' '}
        <code>1</code>, <code>2</code>, …). Every row is checked by chatq first; nothing is sent until you send it.
      </p>
      <Card title="1. Template and file">
        <div class="form-grid">
          <label>
            Template
            <select onChange={pick} value={f.template + '|' + f.language} name="pick">
              <option value="|">{templates.length ? 'choose an approved template…' : 'type its name below'}</option>
              {templates.map((t) => (
                <option value={t.elementName + '|' + t.languageCode}>
                  {t.elementName} ({t.languageCode}, {t.params} parameters)
                </option>
              ))}
            </select>
          </label>
          <label>
            Template name
            <input name="template" value={f.template} onInput={set('template')} placeholder="welcome_offer" />
          </label>
          <label>
            Language
            <input name="language" value={f.language} onInput={set('language')} placeholder="en_US" />
          </label>
          <label>
            Campaign (batch id)
            <input name="batch" value={f.batch} onInput={set('batch')} />
          </label>
          <label>
            Priority
            <select name="priority" value={f.priority} onChange={set('priority')}>
              <option value="bulk">bulk</option>
              <option value="transactional">transactional</option>
            </select>
          </label>
          <label>
            CSV file
            <input type="file" name="csv" accept=".csv,text/csv" onChange={load} />
          </label>
        </div>
      </Card>
      <ErrorBox error={err || (parsed?.error ? { message: parsed.error } : null)} />
      {rows.length && !parsed.error ? (
        <Card
          title={`2. Preview: ${rows.length} rows of ${file.name}`}
          actions={
            <>
              <button onClick={check} disabled={!ready || !!busy} class={checks ? 'secondary' : ''}>
                Check every row
              </button>
              <button onClick={send} disabled={!checks || !good.length || !!busy || !!sent} data-testid="send">
                Send {checks ? good.length : ''} valid rows
              </button>
            </>
          }
        >
          {busy ? <div class="notice">{busy}…</div> : null}
          {checks ? (
            <div class={bad ? 'notice warn' : 'notice ok'} data-testid="check-summary">
              {good.length} rows ready to send; {bad} with errors{bad ? ', which will be left out' : ''}.
            </div>
          ) : (
            <p class="muted small">Check the rows: chatq validates each message and its template as it would when sending.</p>
          )}
          {sent ? (
            <div class="notice ok" data-testid="sent">
              Queued {sent.queued} messages of campaign <a href={href('/campaigns/' + encodeURIComponent(f.batch))}>{f.batch}</a>
              {sent.failed.length ? `; ${sent.failed.length} refused: ` + sent.failed.map((x) => `line ${x.line}: ${x.error.message}`).join('; ') : '.'}
            </div>
          ) : null}
          <table class="preview">
            <thead>
              <tr>
                <th class="num">line</th>
                <th>destination</th>
                {parsed.columns.map((c) => (
                  <th>{c}</th>
                ))}
                <th>check</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r, i) => (i < 500 || (checks && !checks[i].ok)) && (
                <tr class={checks ? (checks[i].ok ? 'ok' : 'bad') : ''} data-line={r.line}>
                  <td class="num">{r.line}</td>
                  <td class="mono">{r.destination}</td>
                  {r.params.map((p) => (
                    <td>{p}</td>
                  ))}
                  <td>
                    {!checks ? (
                      <span class="muted">not checked</span>
                    ) : checks[i].ok ? (
                      <span class="okmark">ready</span>
                    ) : (
                      <span class="row-error">
                        {checks[i].error.field ? <b>{checks[i].error.field}: </b> : null}
                        {checks[i].error.message}
                      </span>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {rows.length > 500 ? <p class="muted small">The first 500 rows are shown, and every row with an error; every row is checked.</p> : null}
        </Card>
      ) : !file ? (
        <Empty>Choose a CSV file to see its rows.</Empty>
      ) : null}
    </div>
  );
}

export const page = { path: '/new-campaign', title: 'New campaign', order: 40, component: NewCampaign };
