// The hash of the console's sources, recorded in dist/build.json by the
// build. internal/console's Go test computes the same hash from the files
// on disk and fails when it differs from the recorded one: a source was
// changed without `make console`, and the embedded build is stale.
//
// The hash: SHA-256 over the sorted relative paths of the files below,
// each followed by a NUL, its content and a NUL.
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const roots = ['index.html', 'package.json', 'package-lock.json', 'vite.config.js', 'src'];

function walk(p, out) {
  if (statSync(p).isDirectory()) {
    for (const name of readdirSync(p)) walk(join(p, name), out);
  } else {
    out.push(relative(root, p).split('\\').join('/'));
  }
  return out;
}

export function sourceHash() {
  const files = roots.flatMap((r) => walk(join(root, r), [])).sort();
  const h = createHash('sha256');
  for (const f of files) {
    h.update(f + '\0');
    h.update(readFileSync(join(root, f)));
    h.update('\0');
  }
  return h.digest('hex');
}

if (process.argv.includes('--write')) {
  const out = join(root, '..', 'dist', 'build.json');
  writeFileSync(out, JSON.stringify({ sources_sha256: sourceHash() }, null, 2) + '\n');
  console.log('wrote ' + relative(process.cwd(), out));
} else {
  console.log(sourceHash());
}
