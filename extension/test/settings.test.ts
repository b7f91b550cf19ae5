import assert from 'node:assert/strict';
import { test } from 'node:test';
import pkg from '../package.json';
import {
  classifyConfigChange,
  declaredSettings,
  didChangeConfigurationParams,
  initializationOptions,
  serverKeys,
} from '../src/settings';

const defaults = (key: string) => (declaredSettings()[key] as { default: unknown }).default;

test('package.json declares exactly the contract settings', () => {
  assert.deepEqual(Object.keys(pkg.contributes.configuration.properties).sort(), [
    'ledex.adapter',
    'ledex.junitGlobs',
    'ledex.model',
    'ledex.pythonPath',
    'ledex.rounds',
    'ledex.runOnSave',
    'ledex.samples',
    'ledex.search',
    'ledex.searchSeconds',
    'ledex.testCommand',
  ]);
  assert.equal(defaults('pythonPath'), '');
  assert.equal(defaults('model'), '');
  assert.equal(defaults('adapter'), '');
  assert.equal(defaults('testCommand'), '');
  assert.deepEqual(defaults('junitGlobs'), ['**/junit*.xml', '**/test-results/**/*.xml']);
  assert.equal(defaults('samples'), 4);
  assert.equal(defaults('rounds'), 2);
  assert.equal(defaults('runOnSave'), true);
  assert.equal(defaults('search'), true);
  assert.equal(defaults('searchSeconds'), 60);
});

test('server keys exclude the extension-only pythonPath', () => {
  assert.deepEqual(serverKeys(), ['model', 'adapter', 'testCommand', 'junitGlobs', 'samples', 'rounds', 'runOnSave', 'search', 'searchSeconds']);
});

test('initializationOptions: unprefixed camelCase keys from the settings', () => {
  const values: Record<string, unknown> = {
    pythonPath: '/venv/bin/python',
    model: 'hf://HuggingFaceTB/SmolLM2-360M-Instruct-GGUF/smollm2-360m-instruct-q8_0.gguf',
    adapter: '',
    testCommand: 'pytest -x',
    junitGlobs: ['build/junit.xml'],
    samples: 8,
    rounds: 3,
    runOnSave: false,
    search: false,
    searchSeconds: 240.5,
  };
  assert.deepEqual(initializationOptions((k) => values[k]), {
    model: 'hf://HuggingFaceTB/SmolLM2-360M-Instruct-GGUF/smollm2-360m-instruct-q8_0.gguf',
    adapter: '',
    testCommand: 'pytest -x',
    junitGlobs: ['build/junit.xml'],
    samples: 8,
    rounds: 3,
    runOnSave: false,
    search: false,
    searchSeconds: 240.5,
  });
});

test('unset or invalid values fall back to the package.json defaults, integers are clamped', () => {
  const values: Record<string, unknown> = {
    model: 42, junitGlobs: 'x', samples: '6', rounds: 0.4, runOnSave: 'yes', testCommand: '  make test ', searchSeconds: -5,
  };
  assert.deepEqual(initializationOptions((k) => values[k]), {
    model: '',
    adapter: '',
    testCommand: 'make test',
    junitGlobs: ['**/junit*.xml', '**/test-results/**/*.xml'],
    samples: 6,
    rounds: 1,
    runOnSave: true,
    search: true,
    searchSeconds: 0,
  });
  assert.equal(initializationOptions(() => 1e9).samples, 64);
  assert.equal(initializationOptions(() => 1e9).searchSeconds, 3600);
  assert.equal(initializationOptions((k) => (k === 'searchSeconds' ? '90.5' : undefined)).searchSeconds, 90.5);
  assert.equal(initializationOptions((k) => (k === 'searchSeconds' ? ' ' : undefined)).searchSeconds, 60);
});

test('didChangeConfiguration params wrap the settings under "ledex"', () => {
  const p = didChangeConfigurationParams(() => undefined);
  assert.deepEqual(Object.keys(p.settings), ['ledex']);
  assert.equal(p.settings.ledex.samples, 4);
  assert.equal('pythonPath' in p.settings.ledex, false);
});

test('config changes: pythonPath restarts, others are forwarded, unrelated ignored', () => {
  const affects = (keys: string[]) => (s: string) => keys.some((k) => k === s || k.startsWith(s + '.'));
  assert.equal(classifyConfigChange(affects(['editor.fontSize'])), 'none');
  assert.equal(classifyConfigChange(affects(['ledex.samples'])), 'notify');
  assert.equal(classifyConfigChange(affects(['ledex.pythonPath'])), 'restart');
  assert.equal(classifyConfigChange(affects(['ledex.pythonPath', 'ledex.model'])), 'restart');
});
