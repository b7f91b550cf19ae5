// Glue to VS Code: the status bar item.
import * as vscode from 'vscode';
import { Activity, Phase, ServerStatus, statusView } from './status';

export class LedexStatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('ledex.status', vscode.StatusBarAlignment.Left, 50);
  phase: Phase = 'starting';
  status: ServerStatus | undefined;
  detail: string | undefined;

  constructor(private readonly modelSetting: () => string) {
    this.item.name = 'ledex';
    this.item.command = 'ledex.client.menu';
    this.render();
    this.item.show();
  }

  render(activity?: Activity, busy?: boolean): void {
    const v = statusView({ phase: this.phase, status: this.status, modelSetting: this.modelSetting(), activity, busy, detail: this.detail });
    this.item.text = v.text;
    this.item.tooltip = v.tooltip;
    this.item.backgroundColor =
      this.phase === 'missing' || this.phase === 'error' ? new vscode.ThemeColor('statusBarItem.warningBackground') : undefined;
  }

  dispose(): void {
    this.item.dispose();
  }
}
