// Glue to VS Code: interpreter resolution, probing the interpreter for ledex.
import * as cp from 'child_process';
import * as os from 'os';
import * as vscode from 'vscode';
import { classifyProbe, interpreterFromPythonApi, Interpreter, PROBE_SCRIPT, ProbeVerdict, resolveInterpreter } from './interpreter';

const PYTHON_EXTENSION_ID = 'ms-python.python';

async function pythonExtensionApi(): Promise<any | undefined> {
  const ext = vscode.extensions.getExtension(PYTHON_EXTENSION_ID);
  if (!ext) return undefined;
  return ext.isActive ? ext.exports : await ext.activate();
}

export function primaryFolder(): vscode.WorkspaceFolder | undefined {
  const active = vscode.window.activeTextEditor?.document.uri;
  return (active && vscode.workspace.getWorkspaceFolder(active)) || vscode.workspace.workspaceFolders?.[0];
}

export async function currentInterpreter(): Promise<Interpreter> {
  const folder = primaryFolder();
  return resolveInterpreter({
    setting: vscode.workspace.getConfiguration('ledex', folder?.uri).get<string>('pythonPath'),
    ctx: { workspaceFolder: folder?.uri.fsPath, home: os.homedir(), env: process.env },
    pythonExtension: vscode.extensions.getExtension(PYTHON_EXTENSION_ID)
      ? async () => interpreterFromPythonApi(await pythonExtensionApi(), folder?.uri)
      : undefined,
  });
}

/** Fires when the Python extension's active interpreter changes (if it is installed). */
export async function onPythonInterpreterChange(listener: () => void): Promise<vscode.Disposable | undefined> {
  try {
    const api = await pythonExtensionApi();
    const ev = api?.environments?.onDidChangeActiveEnvironmentPath ?? api?.settings?.onDidChangeExecutionDetails;
    return typeof ev === 'function' ? ev(listener) : undefined;
  } catch {
    return undefined;
  }
}

/** Runs `<python> -c PROBE_SCRIPT` (10 s timeout) and classifies the answer. */
export function probe(python: string, cwd?: string): Promise<ProbeVerdict> {
  return new Promise((resolve) => {
    cp.execFile(python, ['-c', PROBE_SCRIPT], { cwd, timeout: 10_000, windowsHide: true }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: string | number }) | null;
      const errorCode = e && typeof e.code === 'string' ? e.code : undefined;
      const exitCode = e ? (typeof e.code === 'number' ? e.code : null) : 0;
      resolve(classifyProbe({ errorCode, exitCode, stdout: String(stdout), stderr: String(stderr) }));
    });
  });
}
