/**
 * Per-request CPU profile of two serving variants from ONE bench run: the samples of a
 * `--cpu-prof` profile are split by the measured windows the bench prints in its JSON line
 * (same monotonic clock), so both variants are profiled interleaved, under the same machine
 * conditions, and each function's self time is divided by that variant's request count.
 *
 *   node --cpu-prof --cpu-prof-dir=/tmp/prof --import tsx bench/serving.ts --variants conveyor,bare,run-only --concurrency 32 > /tmp/bench.out
 *   node --import tsx bench/profile-by-variant.ts /tmp/prof/<largest>.cpuprofile /tmp/bench.out [--by file] [--top 40] [--a conveyor] [--b bare]
 *
 * Prints µs per request for each function (or file) in a and b and the difference, largest first.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}
interface Window {
  variant: string;
  requests: number;
  startUs: number;
  endUs: number;
}

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { by: { type: 'string', default: 'function' }, top: { type: 'string', default: '40' }, a: { type: 'string', default: 'conveyor' }, b: { type: 'string', default: 'bare' } },
});
const [profilePath, benchOutput] = positionals;
if (!profilePath || !benchOutput) throw new Error('usage: profile-by-variant.ts <cpuprofile> <bench output> [--by function|file] [--top N] [--a variant] [--b variant]');
if (values.by !== 'function' && values.by !== 'file') throw new Error(`--by: "function" or "file", got "${values.by}"`);

const profile = JSON.parse(readFileSync(profilePath, 'utf8')) as Profile;
const line = readFileSync(benchOutput, 'utf8').split('\n').filter((l) => l.startsWith('{"bench":"serving"')).pop();
if (!line) throw new Error(`${benchOutput}: no JSON line of bench/serving`);
const windows = (JSON.parse(line) as { windows?: Window[] }).windows;
if (!windows?.length) throw new Error(`${benchOutput}: the JSON line has no measured windows`);

const short = (url: string): string => url.replace(/^.*node_modules\//, 'nm/').replace(/^file:\/\/.*?\/(src|bench|test)\//, '$1/');
const nameOf = (cf: ProfileNode['callFrame']): string => {
  if (values.by === 'file') return cf.url ? (cf.url.includes('node_modules/') ? `nm/${cf.url.split('node_modules/')[1]!.split('/')[0]}` : short(cf.url)) : cf.functionName;
  return `${cf.functionName || '(anonymous)'} ${short(cf.url)}:${cf.lineNumber}`;
};

const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const perVariant = new Map<string, Map<string, number>>();
const requests = new Map<string, number>();
for (const w of windows) requests.set(w.variant, (requests.get(w.variant) ?? 0) + w.requests);
let t = profile.startTime;
for (let i = 0; i < profile.samples.length; i++) {
  t += profile.timeDeltas[i] ?? 0;
  const w = windows.find((x) => t >= x.startUs && t <= x.endUs);
  if (!w) continue;
  const name = nameOf(byId.get(profile.samples[i]!)!.callFrame);
  const m = perVariant.get(w.variant) ?? new Map<string, number>();
  perVariant.set(w.variant, m);
  // A sample stands for the time until the next one.
  m.set(name, (m.get(name) ?? 0) + (profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0));
}

const a = perVariant.get(values.a);
const b = perVariant.get(values.b);
if (!a || !b) throw new Error(`no samples for ${a ? values.b : values.a} (variants in the profile: ${[...perVariant.keys()].join(', ')})`);
const na = requests.get(values.a)!;
const nb = requests.get(values.b)!;
const rows = [...new Set([...a.keys(), ...b.keys()])].map((name) => {
  const x = (a.get(name) ?? 0) / na;
  const y = (b.get(name) ?? 0) / nb;
  return { name, x, y, d: x - y };
});
const busy = (side: 'x' | 'y'): number => rows.filter((r) => r.name !== '(idle)' && !r.name.startsWith('(idle) ')).reduce((s, r) => s + r[side], 0);
process.stdout.write(`${values.a}: ${na} requests, ${busy('x').toFixed(1)} µs busy per request; ${values.b}: ${nb} requests, ${busy('y').toFixed(1)} µs; difference ${(busy('x') - busy('y')).toFixed(1)} µs\n`);
process.stdout.write(`${'diff'.padStart(8)} ${values.a.padStart(9)} ${values.b.padStart(9)}  ${values.by}\n`);
rows.sort((r, s) => Math.abs(s.d) - Math.abs(r.d));
for (const r of rows.slice(0, Number(values.top))) process.stdout.write(`${r.d.toFixed(2).padStart(8)} ${r.x.toFixed(2).padStart(9)} ${r.y.toFixed(2).padStart(9)}  ${r.name}\n`);
