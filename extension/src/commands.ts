// Glue to VS Code: the extension's commands. Everything that is the server's job is delegated to it
// through workspace/executeCommand; quick fixes come from the server's code actions as they are.
import * as fs from 'fs';
import * as vscode from 'vscode';
import { LedexClient } from './client';
import { DiagnosticLike, failureIdOf, isLedexDiagnostic, rankForLine } from './diagnostics';
import { trainCommand } from './interpreter';
import { currentInterpreter, primaryFolder } from './pythonEnv';
import { runTask } from './tasks';

/** Ids of the extension's own commands (the server's `ledex.runTests` etc. are registered by the language client). */
export const COMMANDS = {
  runTests: 'ledex.client.runTests',
  explainFailure: 'ledex.client.explainFailure',
  dismissSuggestion: 'ledex.client.dismissSuggestion',
  trainNow: 'ledex.client.trainNow',
  showLog: 'ledex.client.showLog',
  restartServer: 'ledex.client.restartServer',
  menu: 'ledex.client.menu',
} as const;

type LedexDiagnostic = vscode.Diagnostic & DiagnosticLike;

/** ledex diagnostics of the active editor ranked by the cursor line, else of the whole workspace. */
function candidateDiagnostics(): Array<{ uri: vscode.Uri; diag: LedexDiagnostic }> {
  const editor = vscode.window.activeTextEditor;
  if (editor) {
    const here = rankForLine(vscode.languages.getDiagnostics(editor.document.uri) as LedexDiagnostic[], editor.selection.active.line);
    if (here.length) return here.map((diag) => ({ uri: editor.document.uri, diag }));
  }
  const all: Array<{ uri: vscode.Uri; diag: LedexDiagnostic }> = [];
  for (const [uri, diags] of vscode.languages.getDiagnostics()) {
    for (const d of diags as LedexDiagnostic[]) if (isLedexDiagnostic(d)) all.push({ uri, diag: d });
  }
  return all;
}

async function pickDiagnostic(purpose: string): Promise<LedexDiagnostic | undefined> {
  const cands = candidateDiagnostics();
  if (cands.length === 0) {
    vscode.window.showInformationMessage('ledex: no test failure to ' + purpose + '. Run the tests first (ledex: Run Tests).');
    return undefined;
  }
  const editor = vscode.window.activeTextEditor;
  const first = cands[0];
  const onCursor =
    editor && first.uri.toString() === editor.document.uri.toString() && first.diag.range.contains(editor.selection.active);
  if (cands.length === 1 || onCursor) return first.diag;
  const pick = await vscode.window.showQuickPick(
    cands.map((c) => ({
      label: c.diag.message.split('\n')[0],
      description: `${vscode.workspace.asRelativePath(c.uri)}:${c.diag.range.start.line + 1}`,
      c,
    })),
    { placeHolder: `Which failure to ${purpose}?` },
  );
  return pick?.c.diag;
}

async function guarded(what: string, fn: () => Promise<unknown>, client: LedexClient): Promise<void> {
  try {
    await fn();
  } catch (e) {
    const pick = await vscode.window.showErrorMessage(`ledex: ${what} failed: ${e instanceof Error ? e.message : e}`, 'Show Log');
    if (pick) client.output.show();
  }
}

export function registerCommands(context: vscode.ExtensionContext, client: LedexClient): void {
  const reg = (id: string, fn: () => Promise<unknown> | unknown) => context.subscriptions.push(vscode.commands.registerCommand(id, fn));

  reg(COMMANDS.runTests, () => guarded('run tests', () => client.executeServerCommand('ledex.runTests'), client));

  /** A server command about one failure: pick its diagnostic, send the failure id. */
  const onFailure = (purpose: string, serverCommand: string) => () =>
    guarded(
      purpose,
      async () => {
        const d = await pickDiagnostic(purpose);
        if (!d) return;
        const id = failureIdOf(d);
        if (!id) throw new Error('this diagnostic carries no failure id');
        await client.executeServerCommand(serverCommand, [id]);
      },
      client,
    );

  // The server writes the explanation to a markdown file and opens it with window/showDocument,
  // which the client middleware renders as a markdown preview.
  reg(COMMANDS.explainFailure, onFailure('explain', 'ledex.explain'));
  reg(COMMANDS.dismissSuggestion, onFailure('dismiss', 'ledex.dismiss'));

  reg(COMMANDS.trainNow, () =>
    guarded(
      'train',
      async () => {
        let folder = primaryFolder();
        const folders = vscode.workspace.workspaceFolders ?? [];
        if (folders.length > 1) folder = (await vscode.window.showWorkspaceFolderPick({ placeHolder: 'Train on which folder?' })) ?? undefined;
        if (!folder) {
          if (folders.length === 0) vscode.window.showInformationMessage('ledex: open a folder to train on.');
          return;
        }
        const interp = client.interpreter ?? (await currentInterpreter());
        const cmd = trainCommand(interp.python, folder.uri.fsPath, (p) => fs.existsSync(p));
        client.output.info(`train: ${cmd.command} ${cmd.args.join(' ')}`);
        const code = await runTask('ledex: train', cmd, folder);
        await client.refreshStatus();
        if (code === 0) vscode.window.showInformationMessage('ledex: training finished.');
        else if (code !== undefined) {
          const pick = await vscode.window.showWarningMessage(`ledex: ledex-train exited with code ${code} (see the terminal).`, 'Show Log');
          if (pick) client.output.show();
        }
      },
      client,
    ),
  );

  reg(COMMANDS.showLog, () => client.output.show());
  reg(COMMANDS.restartServer, () => guarded('restart', () => client.restart(), client));
  reg(COMMANDS.menu, () => vscode.commands.executeCommand('workbench.action.quickOpen', '>ledex: '));
}
