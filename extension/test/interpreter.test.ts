import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  classifyProbe,
  expandPath,
  installCommand,
  interpreterFromPythonApi,
  isLedexPyproject,
  resolveInterpreter,
  serverCommand,
  shellQuote,
  trainCommand,
} from '../src/interpreter';

const ctx = { workspaceFolder: '/ws', home: '/home/u', env: { VENV: '/opt/venv' } };

test('setting wins over the Python extension, and is expanded', async () => {
  let asked = false;
  const r = await resolveInterpreter({
    setting: '${workspaceFolder}/.venv/bin/python',
    ctx,
    pythonExtension: async () => {
      asked = true;
      return '/other/python';
    },
  });
  assert.deepEqual(r, { python: '/ws/.venv/bin/python', source: 'setting' });
  assert.equal(asked, false);
});

test('empty setting: the Python extension interpreter', async () => {
  const r = await resolveInterpreter({ setting: '', ctx, pythonExtension: async () => '/envs/a/bin/python' });
  assert.deepEqual(r, { python: '/envs/a/bin/python', source: 'python-extension' });
});

test('no Python extension, or it fails or has nothing: python3', async () => {
  assert.deepEqual(await resolveInterpreter({ setting: undefined, ctx }), { python: 'python3', source: 'default' });
  assert.deepEqual(await resolveInterpreter({ setting: '  ', ctx, pythonExtension: async () => undefined }), {
    python: 'python3',
    source: 'default',
  });
  const failing = async (): Promise<string> => {
    throw new Error('boom');
  };
  assert.deepEqual(await resolveInterpreter({ setting: '', ctx, pythonExtension: failing }), { python: 'python3', source: 'default' });
});

test('expandPath: ~, ${userHome}, ${env:X}, relative paths, bare command names', () => {
  assert.equal(expandPath('~/venv/bin/python', ctx), '/home/u/venv/bin/python');
  assert.equal(expandPath('${userHome}/p', ctx), '/home/u/p');
  assert.equal(expandPath('${env:VENV}/bin/python', ctx), '/opt/venv/bin/python');
  assert.equal(expandPath('.venv/bin/python', ctx), '/ws/.venv/bin/python');
  assert.equal(expandPath('python3.12', ctx), 'python3.12');
  assert.equal(expandPath('${workspaceFolder}/py', {}), '${workspaceFolder}/py');
});

test('Python extension API: environments API, then legacy execution details', async () => {
  const modern = {
    environments: {
      getActiveEnvironmentPath: () => ({ id: 'x', path: '/envs/x' }),
      resolveEnvironment: async () => ({ executable: { uri: { fsPath: '/envs/x/bin/python' } } }),
    },
  };
  assert.equal(await interpreterFromPythonApi(modern), '/envs/x/bin/python');
  const unresolved = { environments: { getActiveEnvironmentPath: () => ({ path: '/usr/bin/python3' }), resolveEnvironment: async () => undefined } };
  assert.equal(await interpreterFromPythonApi(unresolved), '/usr/bin/python3');
  const legacy = { settings: { getExecutionDetails: () => ({ execCommand: ['/legacy/python'] }) } };
  assert.equal(await interpreterFromPythonApi(legacy), '/legacy/python');
  assert.equal(await interpreterFromPythonApi(undefined), undefined);
  assert.equal(await interpreterFromPythonApi({}), undefined);
});

test('server is launched as <python> -m ledex.server --stdio', () => {
  assert.deepEqual(serverCommand('/v/bin/python'), { command: '/v/bin/python', args: ['-m', 'ledex.server', '--stdio'] });
});

test('probe verdicts', () => {
  assert.deepEqual(classifyProbe({ exitCode: 0, stdout: '3.11.7 ok\n', stderr: '' }), { kind: 'ok', pythonVersion: '3.11.7' });
  assert.equal(classifyProbe({ errorCode: 'ENOENT', exitCode: null, stdout: '', stderr: '' }).kind, 'no-python');
  const missing = classifyProbe({ exitCode: 3, stdout: '3.12.1 missing\n', stderr: '' });
  assert.equal(missing.kind, 'no-ledex');
  assert.match((missing as { detail: string }).detail, /ledex\.server not found/);
  const old = classifyProbe({ exitCode: 3, stdout: '3.8.10 missing\n', stderr: '' });
  assert.match((old as { detail: string }).detail, /too old/);
  const py2 = classifyProbe({ exitCode: 1, stdout: '', stderr: 'SyntaxError: invalid syntax' });
  assert.deepEqual(py2, { kind: 'no-python', detail: 'exited with 1: SyntaxError: invalid syntax' });
});

test('install command: pip, editable when the workspace is the ledex source tree', () => {
  assert.equal(installCommand('/v/bin/python', undefined, 'linux'), '/v/bin/python -m pip install ledex');
  assert.equal(installCommand('/my dir/python', '/src/ledex', 'linux'), "'/my dir/python' -m pip install -e /src/ledex");
  assert.equal(installCommand('C:\\Py 3\\python.exe', undefined, 'win32'), '"C:\\Py 3\\python.exe" -m pip install ledex');
  assert.equal(isLedexPyproject('[project]\nname = "ledex"\nversion = "0.1.0"\n'), true);
  assert.equal(isLedexPyproject('[project]\nname = "ledex-tools"\n'), false);
});

test('train command: ledex-train next to the interpreter, else from PATH', () => {
  const exists = (p: string) => p === '/ws/.venv/bin/ledex-train';
  assert.deepEqual(trainCommand('/ws/.venv/bin/python', '/ws', exists, 'linux'), {
    command: '/ws/.venv/bin/ledex-train',
    args: ['all', '--workspace', '/ws'],
  });
  assert.deepEqual(trainCommand('python3', '/ws', exists, 'linux'), { command: 'ledex-train', args: ['all', '--workspace', '/ws'] });
  assert.deepEqual(trainCommand('/usr/bin/python3', '/w s', () => false, 'linux'), {
    command: 'ledex-train',
    args: ['all', '--workspace', '/w s'],
  });
});

test('shellQuote', () => {
  assert.equal(shellQuote('/a/b-c_d.py'), '/a/b-c_d.py');
  assert.equal(shellQuote("it's here"), "'it'\\''s here'");
});
