import Papa from 'papaparse';

// The campaign CSV: a `destination` column, then one column per template
// parameter (in their order), or columns named 1, 2, ... (in their number's
// order, wherever they stand).

// parseCampaign returns {rows: [{line, destination, params}], error}.
export function parseCampaign(text) {
  const res = Papa.parse(text.replace(/^\uFEFF/, ''), { header: true, skipEmptyLines: 'greedy', transformHeader: (h) => h.trim() });
  const fields = res.meta.fields || [];
  if (!fields.includes('destination')) {
    return { rows: [], error: 'the CSV needs a "destination" column (its first line names the columns: destination, then the template parameters)' };
  }
  const numbered = fields.filter((f) => /^[0-9]+$/.test(f)).sort((a, b) => Number(a) - Number(b));
  const params = numbered.length ? numbered : fields.filter((f) => f !== 'destination');
  if (numbered.length) {
    const want = numbered.map((_, i) => String(i + 1));
    if (numbered.join() !== want.join()) return { rows: [], error: `parameter columns must be numbered 1 to ${numbered.length} without gaps, not ${numbered.join(', ')}` };
  }
  const broken = res.errors.find((e) => e.code !== 'UndetectableDelimiter');
  if (broken) return { rows: [], error: `line ${broken.row + 2}: ${broken.message}` };
  const rows = res.data.map((r, i) => ({
    line: i + 2, // the header is line 1
    destination: (r.destination || '').trim(),
    params: params.map((p) => (r[p] ?? '').trim()),
  }));
  return { rows, columns: params, error: rows.length ? '' : 'the CSV has no rows after its header' };
}
