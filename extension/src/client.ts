// Glue to VS Code: owns the vscode-languageclient LanguageClient that runs `<python> -m ledex.server --stdio`.
import * as fs from 'fs';
import * as vscode from 'vscode';
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  State,
} from 'vscode-languageclient/node';
import { isMarkdownTarget } from './diagnostics';
import { installCommand, Interpreter, isLedexPyproject, serverCommand } from './interpreter';
import { currentInterpreter, primaryFolder, probe } from './pythonEnv';
import { didChangeConfigurationParams, initializationOptions, SECTION } from './settings';
import { BusyTracker, parseServerStatus } from './status';
import { LedexStatusBar } from './statusBar';
import { runTask } from './tasks';

const STATUS_POLL_MS = 30_000;

function settingGetter(scope?: vscode.Uri) {
  const cfg = vscode.workspace.getConfiguration(SECTION, scope);
  return (key: string) => cfg.get(key);
}

export class LedexClient implements vscode.Disposable {
  client: LanguageClient | undefined;
  interpreter: Interpreter | undefined;
  readonly output: vscode.LogOutputChannel;
  readonly busy = new BusyTracker();
  readonly statusBar: LedexStatusBar;
  private poll: NodeJS.Timeout | undefined;
  private starting: Promise<void> | undefined;
  private wasBusy = false;

  constructor(private readonly context: vscode.ExtensionContext) {
    this.output = vscode.window.createOutputChannel('ledex', { log: true });
    this.statusBar = new LedexStatusBar(() => vscode.workspace.getConfiguration(SECTION).get<string>('model') ?? '');
    this.busy.onDidChange(() => {
      this.statusBar.render(this.busy.current, this.busy.busy);
      if (this.wasBusy && !this.busy.busy) void this.refreshStatus(); // work finished: model/training may have changed
      this.wasBusy = this.busy.busy;
    });
  }

  get running(): boolean {
    return this.client?.state === State.Running;
  }

  start(): Promise<void> {
    this.starting ??= this.doStart().finally(() => (this.starting = undefined));
    return this.starting;
  }

  private async doStart(): Promise<void> {
    const folder = primaryFolder();
    this.statusBar.phase = 'starting';
    this.statusBar.detail = undefined;
    this.statusBar.render();
    const interp = (this.interpreter = await currentInterpreter());
    this.output.info(`interpreter: ${interp.python} (from ${interp.source})`);
    const verdict = await probe(interp.python, folder?.uri.fsPath);
    if (verdict.kind !== 'ok') {
      this.output.warn(`cannot start ledex-lsp with ${interp.python}: ${verdict.kind} (${verdict.detail})`);
      this.statusBar.phase = 'missing';
      this.statusBar.detail = `${interp.python}: ${verdict.detail}`;
      this.statusBar.render();
      void this.showMissing(interp, verdict.kind, verdict.detail);
      return;
    }
    const { command, args } = serverCommand(interp.python);
    const serverOptions: ServerOptions = { command, args, options: { cwd: folder?.uri.fsPath, env: { PYTHONFAULTHANDLER: '1', ...process.env } } }; // native crashes (llama.cpp) leave a Python traceback in the log
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: 'file', language: 'python' }],
      outputChannel: this.output,
      initializationOptions: initializationOptions(settingGetter(folder?.uri)),
      middleware: {
        // Busy/idle comes from the server's $/progress work-done progress; the client still shows it too.
        handleWorkDoneProgress: (token, params, next) => {
          this.busy.handle(token, params);
          next(token, params);
        },
        window: {
          // The server shows explanations via window/showDocument on a generated .md: render it as a preview.
          showDocument: async (params, token, next) => {
            if (params.external !== true && isMarkdownTarget(params.uri)) {
              try {
                await vscode.commands.executeCommand('markdown.showPreviewToSide', vscode.Uri.parse(params.uri));
                return { success: true };
              } catch (e) {
                this.output.warn(`markdown preview failed, opening as text: ${e}`);
              }
            }
            return next(params, token);
          },
        },
      },
    };
    const client = new LanguageClient('ledex', 'ledex', serverOptions, clientOptions);
    this.client = client;
    client.onDidChangeState((e) => {
      if (e.newState === State.Stopped) {
        this.busy.reset();
        this.statusBar.phase = 'stopped';
        this.statusBar.render();
      }
    });
    try {
      await client.start();
    } catch (e) {
      this.statusBar.phase = 'error';
      this.statusBar.detail = String(e);
      this.statusBar.render();
      const pick = await vscode.window.showErrorMessage(`ledex: the language server failed to start: ${e}`, 'Show Log');
      if (pick) this.output.show();
      return;
    }
    this.statusBar.phase = 'running';
    this.statusBar.render();
    await this.refreshStatus();
    this.poll = setInterval(() => void this.refreshStatus(), STATUS_POLL_MS);
  }

  async stop(): Promise<void> {
    if (this.poll) clearInterval(this.poll);
    this.poll = undefined;
    const c = this.client;
    this.client = undefined;
    this.busy.reset();
    if (c) {
      try {
        await c.stop(5000);
      } catch (e) {
        this.output.warn(`stop: ${e}`);
      }
    }
  }

  async restart(): Promise<void> {
    await this.starting;
    await this.stop();
    await this.start();
  }

  /** `workspace/executeCommand` on the server. */
  async executeServerCommand(command: string, args: unknown[] = []): Promise<unknown> {
    if (!this.running) {
      await this.start();
      if (!this.running) throw new Error('the ledex language server is not running');
    }
    return this.client!.sendRequest(ExecuteCommandRequest.type, { command, arguments: args });
  }

  async refreshStatus(): Promise<void> {
    if (!this.running) return;
    try {
      const s = parseServerStatus(await this.client!.sendRequest(ExecuteCommandRequest.type, { command: 'ledex.status', arguments: [] }));
      if (s) this.statusBar.status = s;
    } catch (e) {
      this.output.debug(`ledex.status: ${e}`);
    }
    this.statusBar.render(this.busy.current, this.busy.busy);
  }

  /** Forwards changed ledex.* settings live: `workspace/didChangeConfiguration` with `{ ledex: {...} }`. */
  async notifyConfigurationChanged(): Promise<void> {
    if (!this.running) return;
    const params = didChangeConfigurationParams(settingGetter(primaryFolder()?.uri));
    await this.client!.sendNotification(DidChangeConfigurationNotification.type, params);
    await this.refreshStatus();
  }

  private async showMissing(interp: Interpreter, kind: 'no-python' | 'no-ledex', detail: string): Promise<void> {
    const where = interp.source === 'setting' ? 'ledex.pythonPath' : interp.source === 'python-extension' ? "the Python extension's interpreter" : 'the default';
    const msg =
      kind === 'no-ledex'
        ? `ledex: the Python package "ledex" is not installed in ${interp.python} (${where}): ${detail}. Install it there, or point ledex.pythonPath at an environment that has it.`
        : `ledex: cannot run Python "${interp.python}" (${where}): ${detail}. Set ledex.pythonPath to a Python 3.10+ with ledex installed.`;
    const actions = kind === 'no-ledex' ? ['Install with pip', 'How to Install', 'Select Interpreter'] : ['How to Install', 'Select Interpreter'];
    const pick = await vscode.window.showWarningMessage(msg, ...actions);
    if (pick === 'How to Install') {
      await this.showInstallHelp();
    } else if (pick === 'Select Interpreter') {
      if (vscode.extensions.getExtension('ms-python.python')) await vscode.commands.executeCommand('python.setInterpreter');
      else await vscode.commands.executeCommand('workbench.action.openSettings', 'ledex.pythonPath');
    } else if (pick === 'Install with pip') {
      const source = (vscode.workspace.workspaceFolders ?? []).map((f) => f.uri.fsPath).find((dir) => {
        try {
          return isLedexPyproject(fs.readFileSync(`${dir}/pyproject.toml`, 'utf8'));
        } catch {
          return false;
        }
      });
      const code = await runTask('ledex: install', installCommand(interp.python, source), primaryFolder());
      if (code === 0) await this.restart();
    }
  }

  async showInstallHelp(): Promise<void> {
    const readme = vscode.Uri.joinPath(this.context.extensionUri, 'README.md');
    try {
      await vscode.commands.executeCommand('markdown.showPreview', readme);
    } catch {
      await vscode.window.showTextDocument(readme);
    }
  }

  dispose(): void {
    void this.stop();
    this.statusBar.dispose();
    this.output.dispose();
  }
}
