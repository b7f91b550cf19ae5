import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BusyTracker, formatLastTraining, parseServerStatus, shortModelName, statusView } from '../src/status';

test('short model names', () => {
  assert.equal(shortModelName(''), 'SmolLM2-135M');
  assert.equal(shortModelName(undefined), 'SmolLM2-135M');
  assert.equal(shortModelName('SmolLM2-135M'), 'SmolLM2-135M');
  assert.equal(shortModelName('/models/qwen2.5-coder-0.5b-q4.gguf'), 'qwen2.5-coder-0.5b-q4');
  assert.equal(shortModelName('hf://owner/repo/smollm2-360m.Q8_0.gguf'), 'smollm2-360m.Q8_0');
  assert.equal(shortModelName('http://127.0.0.1:8080/v1'), '127.0.0.1:8080');
});

test('idle status text follows the contract', () => {
  const v = statusView({ phase: 'running', status: { model: 'SmolLM2-135M', busy: false, lastTraining: null } });
  assert.equal(v.text, 'ledex: SmolLM2-135M (idle)');
  assert.match(v.tooltip, /Last training: never/);
});

test('busy status text shows the progress title, message and percentage', () => {
  const t = new BusyTracker();
  let changes = 0;
  t.onDidChange(() => changes++);
  t.handle('a', { kind: 'begin', title: 'Verifying', message: 'candidate 1/4', percentage: 0 });
  t.handle('a', { kind: 'report', message: 'candidate 2/4', percentage: 40 });
  assert.equal(t.busy, true);
  const v = statusView({ phase: 'running', status: { model: '', busy: false, lastTraining: null }, activity: t.current, busy: t.busy });
  assert.equal(v.text, '$(sync~spin) ledex: SmolLM2-135M (busy: Verifying – candidate 2/4 40%)');
  t.handle('a', { kind: 'end' });
  assert.equal(t.busy, false);
  assert.equal(changes, 3);
});

test('busy tracker: overlapping tokens, reset, unknown kinds', () => {
  const t = new BusyTracker();
  t.handle(1, { kind: 'begin', title: 'Running tests' });
  t.handle('x', { kind: 'begin', title: 'Sampling' });
  assert.equal(t.count, 2);
  assert.equal(t.current?.title, 'Sampling');
  t.handle('x', { kind: 'end' });
  assert.equal(t.current?.title, 'Running tests');
  t.handle(1, { kind: 'bogus' } as never);
  assert.equal(t.count, 1);
  t.reset();
  assert.equal(t.busy, false);
});

test('a "ledex: " prefix in the progress title is not repeated', () => {
  const v = statusView({ phase: 'running', activity: { title: 'ledex: fixing t', message: 'queued' }, busy: true });
  assert.equal(v.text, '$(sync~spin) ledex: SmolLM2-135M (busy: fixing t – queued)');
});

test('server-reported busy also shows busy', () => {
  const v = statusView({ phase: 'running', status: { model: 'm.gguf', busy: true, lastTraining: null } });
  assert.equal(v.text, '$(sync~spin) ledex: m (busy)');
});

test('other phases', () => {
  assert.equal(statusView({ phase: 'starting' }).text, '$(sync~spin) ledex: SmolLM2-135M (starting)');
  assert.equal(statusView({ phase: 'missing' }).text, '$(warning) ledex: not installed');
  assert.equal(statusView({ phase: 'stopped', modelSetting: '/m/x.gguf' }).text, '$(circle-slash) ledex: x (stopped)');
  assert.match(statusView({ phase: 'error', detail: 'spawn EACCES' }).tooltip, /spawn EACCES/);
});

test('last training', () => {
  const now = new Date('2025-06-01T12:00:00Z');
  assert.equal(formatLastTraining(null, now), 'never');
  assert.equal(formatLastTraining('2025-06-01T11:59:30Z', now), 'just now');
  assert.equal(formatLastTraining('2025-06-01T11:15:00Z', now), '45m ago');
  assert.equal(formatLastTraining('2025-06-01T09:00:00Z', now), '3h ago');
  assert.equal(formatLastTraining('2025-05-29T12:00:00Z', now), '3d ago');
  assert.equal(formatLastTraining('run-7 (adapter promoted)', now), 'run-7 (adapter promoted)');
  const v = statusView({ phase: 'running', status: { model: 'x', busy: false, lastTraining: '2025-06-01T09:00:00Z' }, now });
  assert.match(v.tooltip, /Last training: 3h ago/);
});

test('parseServerStatus is defensive', () => {
  assert.deepEqual(parseServerStatus({ model: 'SmolLM2-135M', busy: true, lastTraining: '2025-01-01' }), {
    model: 'SmolLM2-135M',
    busy: true,
    lastTraining: '2025-01-01',
  });
  assert.deepEqual(parseServerStatus({ busy: 'yes' }), { model: '', busy: false, lastTraining: null });
  assert.equal(parseServerStatus(null), undefined);
});
