import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DiagnosticLike, failureIdOf, isLedexDiagnostic, isMarkdownTarget, rankForLine } from '../src/diagnostics';

const d = (over: Partial<DiagnosticLike>, start = 0, end = start): DiagnosticLike => ({
  source: 'ledex',
  message: 'm',
  range: { start: { line: start }, end: { line: end } },
  ...over,
});

test('failure id from data, then code', () => {
  assert.equal(failureIdOf(d({ code: 'suspect', data: { test: 'tests/test_stock.py::test_low', role: 'suspect', episode: 'e1' } })), 'tests/test_stock.py::test_low');
  assert.equal(failureIdOf(d({ code: 'test', data: { role: 'test' } })), undefined);
  assert.equal(failureIdOf(d({ data: { failureId: 'f1' } })), 'f1');
  assert.equal(failureIdOf(d({ data: { failure_id: 'f2' } })), 'f2');
  assert.equal(failureIdOf(d({ data: { id: 7 } })), '7');
  assert.equal(failureIdOf(d({ data: 'raw' })), 'raw');
  assert.equal(failureIdOf(d({ code: 'tests/test_x.py::test_y' })), 'tests/test_x.py::test_y');
  assert.equal(failureIdOf(d({ code: { value: 'c', target: {} } })), 'c');
  assert.equal(failureIdOf(d({})), undefined);
});

test('only ledex diagnostics, nearest the cursor first', () => {
  const a = d({ message: 'a' }, 1);
  const b = d({ message: 'b' }, 10, 12);
  const other = d({ source: 'Pylance', message: 'o' }, 11);
  assert.equal(isLedexDiagnostic(other), false);
  assert.deepEqual(rankForLine([a, b, other], 11).map((x) => x.message), ['b', 'a']);
  assert.deepEqual(rankForLine([a, b, other], 2).map((x) => x.message), ['a', 'b']);
  assert.deepEqual(rankForLine([a, b, other], undefined).map((x) => x.message), ['a', 'b']);
});

test('markdown targets', () => {
  assert.equal(isMarkdownTarget('file:///ws/.ledex/explain/f1.md'), true);
  assert.equal(isMarkdownTarget('file:///ws/x.MD?x=1'), true);
  assert.equal(isMarkdownTarget('file:///ws/x.py'), false);
});
