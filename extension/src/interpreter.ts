// Pure: which Python launches `ledex-lsp`, how to tell whether `ledex` is installed there,
// and the shell commands the extension offers (install, train). No `vscode` import.
import * as path from 'path';

export type InterpreterSource = 'setting' | 'python-extension' | 'default';

export interface Interpreter {
  python: string;
  source: InterpreterSource;
}

export const DEFAULT_PYTHON = 'python3';

export interface ExpandContext {
  workspaceFolder?: string;
  home?: string;
  env?: Record<string, string | undefined>;
}

/** Expands `~`, `${workspaceFolder}`, `${userHome}` and `${env:NAME}` in a path setting. */
export function expandPath(p: string, ctx: ExpandContext): string {
  let out = p.trim();
  if (ctx.home && (out === '~' || out.startsWith('~/'))) out = ctx.home + out.slice(1);
  out = out.replace(/\$\{(workspaceFolder|userHome|env:([A-Za-z_][A-Za-z0-9_]*))\}/g, (whole, name: string, envName?: string) => {
    if (name === 'workspaceFolder') return ctx.workspaceFolder ?? whole;
    if (name === 'userHome') return ctx.home ?? whole;
    return ctx.env?.[envName!] ?? '';
  });
  // A relative path with a separator (e.g. `.venv/bin/python`) is relative to the workspace folder.
  if (ctx.workspaceFolder && !path.isAbsolute(out) && /[\\/]/.test(out)) out = path.join(ctx.workspaceFolder, out);
  return out;
}

/**
 * The interpreter to launch the server with: the `ledex.pythonPath` setting if set, else the
 * Python extension's active interpreter when that extension is installed, else `python3`.
 */
export async function resolveInterpreter(opts: {
  setting: string | undefined;
  ctx: ExpandContext;
  pythonExtension?: () => Promise<string | undefined>;
}): Promise<Interpreter> {
  const setting = (opts.setting ?? '').trim();
  if (setting) return { python: expandPath(setting, opts.ctx), source: 'setting' };
  if (opts.pythonExtension) {
    try {
      const p = await opts.pythonExtension();
      if (p && p.trim()) return { python: p.trim(), source: 'python-extension' };
    } catch {
      // The Python extension failing must not stop ledex: fall through to the default.
    }
  }
  return { python: DEFAULT_PYTHON, source: 'default' };
}

/**
 * The active interpreter from the Python extension's exported API (`ms-python.python`): the
 * `environments` API of current versions, or the older `settings.getExecutionDetails`.
 */
export async function interpreterFromPythonApi(api: any, resource?: unknown): Promise<string | undefined> {
  if (!api) return undefined;
  const envs = api.environments;
  if (envs && typeof envs.getActiveEnvironmentPath === 'function') {
    const active = envs.getActiveEnvironmentPath(resource);
    if (typeof envs.resolveEnvironment === 'function' && active) {
      const resolved = await envs.resolveEnvironment(active);
      const exe = resolved?.executable?.uri?.fsPath ?? resolved?.executable?.uri?.path;
      if (typeof exe === 'string' && exe) return exe;
    }
    if (typeof active?.path === 'string' && active.path) return active.path;
  }
  const details = api.settings?.getExecutionDetails?.(resource);
  const cmd = details?.execCommand;
  if (Array.isArray(cmd) && typeof cmd[0] === 'string' && cmd[0]) return cmd[0];
  return undefined;
}

/** How the server is launched (stdio). */
export function serverCommand(python: string): { command: string; args: string[] } {
  return { command: python, args: ['-m', 'ledex.server', '--stdio'] };
}

/** Script run as `<python> -c PROBE_SCRIPT`: finds `ledex.server` without importing the model stack. */
export const PROBE_SCRIPT = [
  'import importlib.util, sys',
  'try:',
  '    spec = importlib.util.find_spec("ledex.server")',
  'except Exception as e:',
  '    spec = None; print("error:", e)',
  'print(sys.version.split()[0], "ok" if spec else "missing")',
  'sys.exit(0 if spec else 3)',
].join('\n');

export interface ProbeResult {
  /** Spawn error code, e.g. `ENOENT` when the interpreter does not exist. */
  errorCode?: string;
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

export type ProbeVerdict =
  | { kind: 'ok'; pythonVersion?: string }
  | { kind: 'no-python'; detail: string }
  | { kind: 'no-ledex'; detail: string };

export function classifyProbe(r: ProbeResult): ProbeVerdict {
  if (r.errorCode) {
    return { kind: 'no-python', detail: r.errorCode === 'ENOENT' ? 'not found' : r.errorCode };
  }
  const version = /^(\d+\.\d+\S*)\s+(ok|missing)/m.exec(r.stdout);
  if (r.exitCode === 0 && version?.[2] === 'ok') return { kind: 'ok', pythonVersion: version[1] };
  if (version) {
    const [maj, min] = version[1].split('.').map(Number);
    if (maj < 3 || (maj === 3 && min < 10)) {
      return { kind: 'no-ledex', detail: `Python ${version[1]} is too old (ledex needs 3.10+)` };
    }
    return { kind: 'no-ledex', detail: `module ledex.server not found (Python ${version[1]})` };
  }
  // Not a Python at all (or it crashed before printing): report what it said.
  const said = (r.stderr || r.stdout).trim().split('\n').slice(-1)[0] ?? '';
  return { kind: 'no-python', detail: `exited with ${r.exitCode}${said ? `: ${said}` : ''}` };
}

/** POSIX shell quoting (single quotes) unless the word is plainly safe. */
export function shellQuote(word: string): string {
  if (/^[A-Za-z0-9_\/.,:=+@%-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** Windows cmd/PowerShell-friendly quoting. */
export function winQuote(word: string): string {
  return /[\s"&|<>^]/.test(word) ? `"${word.replace(/"/g, '""')}"` : word;
}

/**
 * Shell command that installs ledex into `python`. When the workspace *is* the ledex source
 * tree (its pyproject.toml names the project `ledex`), install it editable from there.
 */
export function installCommand(python: string, ledexSourceDir?: string, platform: string = process.platform): string {
  const q = platform === 'win32' ? winQuote : shellQuote;
  const target = ledexSourceDir ? `-e ${q(ledexSourceDir)}` : 'ledex';
  return `${q(python)} -m pip install ${target}`;
}

/** True when a pyproject.toml text declares the project `ledex`. */
export function isLedexPyproject(text: string): boolean {
  return /^\s*name\s*=\s*["']ledex["']\s*$/m.test(text);
}

/**
 * `ledex-train all --workspace <folder>`: the console script next to the interpreter (same
 * virtual environment) when it exists, otherwise `ledex-train` from PATH.
 */
export function trainCommand(
  python: string,
  folder: string,
  exists: (p: string) => boolean,
  platform: string = process.platform,
): { command: string; args: string[] } {
  let exe = 'ledex-train';
  if (path.isAbsolute(python) || /[\\/]/.test(python)) {
    const dir = path.dirname(python);
    const candidates = platform === 'win32' ? ['ledex-train.exe', 'ledex-train.cmd'] : ['ledex-train'];
    for (const c of candidates) {
      const p = path.join(dir, c);
      if (exists(p)) {
        exe = p;
        break;
      }
    }
  }
  return { command: exe, args: ['all', '--workspace', folder] };
}
