// Entry point: only wires things up. Logic lives in settings/interpreter/status/diagnostics (pure,
// unit-tested) and client/commands/statusBar/tasks (VS Code glue).
import * as vscode from 'vscode';
import { LedexClient } from './client';
import { registerCommands } from './commands';
import { onPythonInterpreterChange } from './pythonEnv';
import { classifyConfigChange } from './settings';

let client: LedexClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  client = new LedexClient(context);
  context.subscriptions.push(client);
  registerCommands(context, client);
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration((e) => {
      const change = classifyConfigChange((s) => e.affectsConfiguration(s));
      if (change === 'restart') void client?.restart();
      else if (change === 'notify') void client?.notifyConfigurationChanged();
    }),
  );
  const sub = await onPythonInterpreterChange(() => {
    if (!vscode.workspace.getConfiguration('ledex').get<string>('pythonPath')) void client?.restart();
  });
  if (sub) context.subscriptions.push(sub);
  await client.start();
}

export async function deactivate(): Promise<void> {
  await client?.stop();
  client = undefined;
}
