// A one-line progress bar on stderr, drawn only when stderr is a terminal (never in logs or pipes).
import { humanSize } from './human-size.js';

export class ProgressBar {
  private lastDraw = 0;
  private readonly enabled: boolean;

  constructor(private readonly label: string, private readonly total: number, stream: NodeJS.WriteStream = process.stderr) {
    this.enabled = stream.isTTY === true;
    this.stream = stream;
  }

  private readonly stream: NodeJS.WriteStream;

  update(done: number): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (now - this.lastDraw < 100 && done < this.total) return;
    this.lastDraw = now;
    const width = 30;
    const fraction = this.total > 0 ? Math.min(1, done / this.total) : 1;
    const filled = Math.round(fraction * width);
    const bar = '#'.repeat(filled) + '.'.repeat(width - filled);
    this.stream.write(`\r${this.label} [${bar}] ${(fraction * 100).toFixed(0).padStart(3)}% ${humanSize(done)} / ${humanSize(this.total)}\x1b[K`);
  }

  /** Clears the bar so the next line starts clean. */
  done(): void {
    if (this.enabled) this.stream.write('\r\x1b[K');
  }
}
