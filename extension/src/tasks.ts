// Glue to VS Code: run a shell command as a task in the terminal panel and wait for its exit code.
import * as vscode from 'vscode';

/** `commandLine` is a full shell command line, or a program + args (quoted by VS Code). */
export function runTask(
  name: string,
  commandLine: string | { command: string; args: string[] },
  folder?: vscode.WorkspaceFolder,
): Promise<number | undefined> {
  const exec =
    typeof commandLine === 'string'
      ? new vscode.ShellExecution(commandLine, { cwd: folder?.uri.fsPath })
      : new vscode.ShellExecution(
          { value: commandLine.command, quoting: vscode.ShellQuoting.Strong },
          commandLine.args.map((a) => ({ value: a, quoting: vscode.ShellQuoting.Strong })),
          { cwd: folder?.uri.fsPath },
        );
  const task = new vscode.Task({ type: 'ledex', name }, folder ?? vscode.TaskScope.Workspace, name, 'ledex', exec);
  task.presentationOptions = { reveal: vscode.TaskRevealKind.Always, panel: vscode.TaskPanelKind.Dedicated, clear: true, focus: false };
  return new Promise((resolve, reject) => {
    const sub = vscode.tasks.onDidEndTaskProcess((e) => {
      const t = e.execution.task;
      if (t.source === 'ledex' && t.name === name) {
        sub.dispose();
        resolve(e.exitCode);
      }
    });
    vscode.tasks.executeTask(task).then(
      () => undefined,
      (err) => {
        sub.dispose();
        reject(err);
      },
    );
  });
}
